// Records which TensorFlow the op library was compiled against, as a plain
// string in the binary. lowbit_tf/_native/__init__.py finds it by scanning the
// file, so a version mismatch is reported before TensorFlow tries (and fails
// with an obscure undefined-symbol error) to load the library.
#ifndef LOWBIT_TF_VERSION
#define LOWBIT_TF_VERSION "unknown"
#endif

extern "C" __attribute__((visibility("default"), used)) const char kLowbitTfBuildInfo[] =
    "lowbit-build-info:tensorflow=" LOWBIT_TF_VERSION ";";
