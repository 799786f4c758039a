// A small, bounds-checked reader for FlexBuffer maps.
//
// TFLite stores a custom op's options ("custom_options") as the bytes of a
// FlexBuffer whose root is a map from attribute name to value. This reader
// understands exactly what the lowbit kernels need: a root map, lookup by key,
// and scalar values (int, uint, bool, float of every width, inline or indirect)
// and strings. Every offset and width read from the buffer is checked against
// the buffer before it is followed, so a truncated or corrupted buffer gives an
// error Status, never an out-of-bounds read.
//
// Format summary (see the FlexBuffers documentation of the flatbuffers project):
//   * The buffer ends with [root value][root packed type: 1 byte][root width: 1 byte].
//   * A packed type byte is (type << 2) | log2(bit width of the child).
//   * Scalars (null, int, uint, float, bool) are stored inline in their parent's
//     width; everything else is an unsigned offset, of the parent's width,
//     pointing backwards from where it is stored.
//   * A map at position p with element width w is laid out as
//       [keys vector offset][keys width][size] p: [values: size x w][types: size bytes]
//     and the keys vector is a size-prefixed vector of offsets to
//     NUL-terminated key strings.
//   * A string at p with width w is [size: w bytes] p: [bytes][NUL].
#ifndef LOWBIT_TFLITE_FLEXBUFFER_READER_H_
#define LOWBIT_TFLITE_FLEXBUFFER_READER_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "custom_ops/core/types.h"

namespace lowbit {
namespace flex {

// FlexBuffer value types (the numbering is part of the format).
enum class Type : std::uint8_t {
  kNull = 0,
  kInt = 1,
  kUInt = 2,
  kFloat = 3,
  kKey = 4,
  kString = 5,
  kIndirectInt = 6,
  kIndirectUInt = 7,
  kIndirectFloat = 8,
  kMap = 9,
  kVector = 10,
  kBlob = 25,
  kBool = 26,
};

// Human readable name of a type code, for error messages ("int", "string", ...).
const char* TypeName(Type type);

// A reference to one value inside a buffer. Obtained from Map::Find; only
// meaningful while the buffer is alive.
class Value {
 public:
  Value() = default;

  Type type() const { return type_; }
  bool IsNumeric() const;  // int, uint, bool or float (inline or indirect)

  // Integer value of an int/uint/bool (inline or indirect). Fails for other
  // types and for uints that do not fit in int64.
  Status AsInt64(std::int64_t* out) const;
  // Floating value of a float, int or uint.
  Status AsDouble(double* out) const;
  // Truth value of a bool, or of an int/uint (non-zero).
  Status AsBool(bool* out) const;
  // Bytes of a string or key.
  Status AsString(std::string* out) const;

 private:
  friend class Map;
  const std::uint8_t* buf_ = nullptr;
  std::size_t size_ = 0;
  std::size_t pos_ = 0;           // where the value (or its offset) is stored
  std::uint8_t parent_width_ = 0; // width of that slot
  std::uint8_t child_width_ = 0;  // width from the packed type
  Type type_ = Type::kNull;

  // Follows the offset stored at pos_ and returns the target position.
  Status Indirect(std::size_t* target) const;
};

// The root map of a FlexBuffer.
class Map {
 public:
  // Parses the root of `data[0, size)`, which must be a map. Validates the map
  // header, its keys vector and its type bytes; values are validated lazily when
  // they are read.
  static Status Parse(const std::uint8_t* data, std::size_t size, Map* map);

  std::size_t size() const { return count_; }

  // Looks up `key`. Returns false if absent.
  bool Find(const char* key, Value* value) const;

  // Key of entry i (i < size()); empty on a malformed key.
  std::string KeyAt(std::size_t i) const;

 private:
  const std::uint8_t* buf_ = nullptr;
  std::size_t size_ = 0;
  std::size_t values_ = 0;      // position of the values
  std::uint8_t width_ = 0;      // width of the values
  std::size_t keys_ = 0;        // position of the key offsets
  std::uint8_t keys_width_ = 0; // width of the key offsets
  std::size_t count_ = 0;

  // Position and length of key i (validated NUL-terminated in the buffer).
  bool KeyBytes(std::size_t i, std::size_t* pos, std::size_t* len) const;
};

// Typed getters for op options. A missing key or a value of the wrong type is
// an error naming the key.
Status GetInt(const Map& map, const char* key, std::int64_t* out);
Status GetString(const Map& map, const char* key, std::string* out);
Status GetFloat(const Map& map, const char* key, double* out);
Status GetBool(const Map& map, const char* key, bool* out);

}  // namespace flex
}  // namespace lowbit

#endif  // LOWBIT_TFLITE_FLEXBUFFER_READER_H_
