/*
 * fl_build.h -- how this extension was built, as setup.py passed it in -D macros (with
 * defaults for a build by other means), for fastloss.show_config().
 */
#ifndef FASTLOSS_FL_BUILD_H
#define FASTLOSS_FL_BUILD_H

#ifndef FL_BUILD_FLAGS
#define FL_BUILD_FLAGS "unknown"
#endif
#ifndef FL_BUILD_LINK_FLAGS
#define FL_BUILD_LINK_FLAGS "unknown"
#endif
#ifndef FL_BUILD_COMPILER
#define FL_BUILD_COMPILER "unknown"
#endif
#ifndef FL_BUILD_DEBUG
#define FL_BUILD_DEBUG 0
#endif

static const char fl_build_flags[] = FL_BUILD_FLAGS;
static const char fl_build_link_flags[] = FL_BUILD_LINK_FLAGS;
static const char fl_build_compiler[] = FL_BUILD_COMPILER;
static const int fl_build_debug = FL_BUILD_DEBUG;

#endif /* FASTLOSS_FL_BUILD_H */
