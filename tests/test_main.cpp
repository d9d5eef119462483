// The doctest main, alone in its translation unit (it is the slowest header to compile).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
