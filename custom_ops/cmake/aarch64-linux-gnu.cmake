# Cross build for 64-bit Arm Linux (Raspberry Pi 4/5 with a 64-bit OS, arm64
# servers) with Debian's cross compiler (apt install g++-aarch64-linux-gnu):
#   cmake -S custom_ops -B build/aarch64 \
#         -DCMAKE_TOOLCHAIN_FILE=$PWD/custom_ops/cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
