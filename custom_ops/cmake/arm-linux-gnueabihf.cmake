# Cross build for 32-bit Arm Linux with hard float and NEON (Raspberry Pi OS
# 32-bit on a Pi 2 or later) with Debian's cross compiler
# (apt install g++-arm-linux-gnueabihf):
#   cmake -S custom_ops -B build/armhf \
#         -DCMAKE_TOOLCHAIN_FILE=$PWD/custom_ops/cmake/arm-linux-gnueabihf.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_CXX_COMPILER arm-linux-gnueabihf-g++)
# ARMv7-A with VFPv4/NEON: every Pi from the Pi 2 on.
set(CMAKE_C_FLAGS_INIT "-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard")
set(CMAKE_CXX_FLAGS_INIT "-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
