# Finds qformer's header dependencies: Eigen 3.4, xsimd 8, nlohmann_json 3, and stb_image (for
# <qformer/io/image.hpp> only). Shared by the build and by the installed qformerConfig.cmake.
#
# Debian's xsimd CMake target asks the linker for -lxtl without finding it; an empty imported xtl target
# satisfies it. Where the Debian packages are missing (the GPU machine), headers copied into a folder named by
# QFORMER_VENDOR_DIR (default: <source>/.vendor) with include/eigen3, include/xsimd and include/nlohmann are
# used instead.
#
# stb has no CMake package: stb_image.h is looked up with find_path (Debian's libstb-dev puts it in
# /usr/include/stb/, the vendor folder in include/stb/) and exposed as the imported INTERFACE target
# qformer::stb_image, which qformer::qformer links. Without stb the target is empty and everything but
# <qformer/io/image.hpp> works; that header then stops with an #error saying what to install.

macro(qformer_find_dependencies)
  if(NOT TARGET xtl)
    add_library(xtl INTERFACE IMPORTED)
  endif()
  if(NOT DEFINED QFORMER_VENDOR_DIR AND DEFINED PROJECT_SOURCE_DIR)
    set(QFORMER_VENDOR_DIR "${PROJECT_SOURCE_DIR}/.vendor")
  endif()
  find_package(Eigen3 3.4 QUIET NO_MODULE)
  if(NOT TARGET Eigen3::Eigen AND EXISTS "${QFORMER_VENDOR_DIR}/include/eigen3")
    add_library(Eigen3::Eigen INTERFACE IMPORTED)
    set_target_properties(Eigen3::Eigen PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${QFORMER_VENDOR_DIR}/include/eigen3")
  endif()
  find_package(xsimd 8 QUIET)
  if(NOT TARGET xsimd AND EXISTS "${QFORMER_VENDOR_DIR}/include/xsimd")
    add_library(xsimd INTERFACE IMPORTED)
    set_target_properties(xsimd PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${QFORMER_VENDOR_DIR}/include")
  endif()
  find_package(nlohmann_json 3.10 QUIET)
  if(NOT TARGET nlohmann_json::nlohmann_json AND EXISTS "${QFORMER_VENDOR_DIR}/include/nlohmann")
    add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
    set_target_properties(nlohmann_json::nlohmann_json PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${QFORMER_VENDOR_DIR}/include")
  endif()
  if(NOT TARGET qformer::stb_image)
    find_path(QFORMER_STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb PATHS "${QFORMER_VENDOR_DIR}/include"
      DOC "Folder holding stb_image.h (Debian: /usr/include/stb)")
    add_library(qformer::stb_image INTERFACE IMPORTED)
    if(QFORMER_STB_INCLUDE_DIR)
      set_target_properties(qformer::stb_image PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${QFORMER_STB_INCLUDE_DIR}")
    else()
      message(STATUS "qformer: stb_image.h not found; <qformer/io/image.hpp> needs it (apt-get install libstb-dev)")
    endif()
  endif()
  foreach(_qformer_target Eigen3::Eigen xsimd nlohmann_json::nlohmann_json)
    if(NOT TARGET ${_qformer_target})
      message(FATAL_ERROR "qformer needs ${_qformer_target}: apt-get install libeigen3-dev libxsimd-dev nlohmann-json3-dev")
    endif()
  endforeach()
endmacro()
