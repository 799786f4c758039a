#include "custom_ops/tflite/flexbuffer_reader.h"

#include <cstring>
#include <limits>

namespace lowbit {
namespace flex {
namespace {

bool ValidWidth(std::uint64_t width) {
  return width == 1 || width == 2 || width == 4 || width == 8;
}

// True when [pos, pos + len) lies inside a buffer of `size` bytes.
bool InBounds(std::size_t size, std::size_t pos, std::size_t len) {
  return pos <= size && len <= size - pos;
}

// Reads a little-endian unsigned integer of `width` bytes at `pos`.
bool ReadUInt(const std::uint8_t* buf, std::size_t size, std::size_t pos,
              std::uint8_t width, std::uint64_t* out) {
  if (!ValidWidth(width) || !InBounds(size, pos, width)) return false;
  std::uint64_t value = 0;
  for (int i = width - 1; i >= 0; --i) value = (value << 8) | buf[pos + i];
  *out = value;
  return true;
}

bool ReadInt(const std::uint8_t* buf, std::size_t size, std::size_t pos,
             std::uint8_t width, std::int64_t* out) {
  std::uint64_t raw = 0;
  if (!ReadUInt(buf, size, pos, width, &raw)) return false;
  if (width < 8) {
    const std::uint64_t sign = std::uint64_t{1} << (8 * width - 1);
    if (raw & sign) raw |= ~((sign << 1) - 1);  // sign-extend
  }
  std::int64_t value;
  std::memcpy(&value, &raw, sizeof(value));
  *out = value;
  return true;
}

bool ReadFloat(const std::uint8_t* buf, std::size_t size, std::size_t pos,
               std::uint8_t width, double* out) {
  std::uint64_t raw = 0;
  if ((width != 4 && width != 8) || !ReadUInt(buf, size, pos, width, &raw)) {
    return false;
  }
  if (width == 4) {
    const std::uint32_t bits = static_cast<std::uint32_t>(raw);
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    *out = f;
  } else {
    double d;
    std::memcpy(&d, &raw, sizeof(d));
    *out = d;
  }
  return true;
}

// Follows the backwards offset of `width` bytes stored at `pos`.
bool Follow(const std::uint8_t* buf, std::size_t size, std::size_t pos,
            std::uint8_t width, std::size_t* target) {
  std::uint64_t offset = 0;
  if (!ReadUInt(buf, size, pos, width, &offset)) return false;
  if (offset > pos) return false;
  *target = pos - static_cast<std::size_t>(offset);
  return true;
}

Status Corrupt(const char* what) {
  return Status::Error(std::string("corrupt FlexBuffer: ") + what);
}

}  // namespace

const char* TypeName(Type type) {
  switch (type) {
    case Type::kNull: return "null";
    case Type::kInt: return "int";
    case Type::kUInt: return "uint";
    case Type::kFloat: return "float";
    case Type::kKey: return "key";
    case Type::kString: return "string";
    case Type::kIndirectInt: return "int (indirect)";
    case Type::kIndirectUInt: return "uint (indirect)";
    case Type::kIndirectFloat: return "float (indirect)";
    case Type::kMap: return "map";
    case Type::kVector: return "vector";
    case Type::kBlob: return "blob";
    case Type::kBool: return "bool";
  }
  return "vector or unknown type";
}

bool Value::IsNumeric() const {
  switch (type_) {
    case Type::kInt: case Type::kUInt: case Type::kFloat: case Type::kBool:
    case Type::kIndirectInt: case Type::kIndirectUInt: case Type::kIndirectFloat:
      return true;
    default:
      return false;
  }
}

Status Value::Indirect(std::size_t* target) const {
  if (!Follow(buf_, size_, pos_, parent_width_, target)) {
    return Corrupt("offset out of range");
  }
  return Status::Ok();
}

Status Value::AsInt64(std::int64_t* out) const {
  std::uint64_t u = 0;
  switch (type_) {
    case Type::kInt:
      if (!ReadInt(buf_, size_, pos_, parent_width_, out)) return Corrupt("truncated int");
      return Status::Ok();
    case Type::kIndirectInt: {
      std::size_t target = 0;
      Status s = Indirect(&target);
      if (!s.ok) return s;
      if (!ReadInt(buf_, size_, target, child_width_, out)) return Corrupt("truncated int");
      return Status::Ok();
    }
    case Type::kUInt:
    case Type::kBool:
      if (!ReadUInt(buf_, size_, pos_, parent_width_, &u)) return Corrupt("truncated uint");
      if (type_ == Type::kBool) u = (u != 0);
      break;
    case Type::kIndirectUInt: {
      std::size_t target = 0;
      Status s = Indirect(&target);
      if (!s.ok) return s;
      if (!ReadUInt(buf_, size_, target, child_width_, &u)) return Corrupt("truncated uint");
      break;
    }
    default:
      return Status::Error(std::string("is a ") + TypeName(type_) +
                           ", expected an integer");
  }
  if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return Status::Error("unsigned value does not fit in int64");
  }
  *out = static_cast<std::int64_t>(u);
  return Status::Ok();
}

Status Value::AsDouble(double* out) const {
  switch (type_) {
    case Type::kFloat:
      if (!ReadFloat(buf_, size_, pos_, parent_width_, out)) return Corrupt("bad float");
      return Status::Ok();
    case Type::kIndirectFloat: {
      std::size_t target = 0;
      Status s = Indirect(&target);
      if (!s.ok) return s;
      if (!ReadFloat(buf_, size_, target, child_width_, out)) return Corrupt("bad float");
      return Status::Ok();
    }
    case Type::kInt: case Type::kIndirectInt:
    case Type::kUInt: case Type::kIndirectUInt: {
      std::int64_t i = 0;
      Status s = AsInt64(&i);
      if (!s.ok) return s;
      *out = static_cast<double>(i);
      return Status::Ok();
    }
    default:
      return Status::Error(std::string("is a ") + TypeName(type_) +
                           ", expected a number");
  }
}

Status Value::AsBool(bool* out) const {
  switch (type_) {
    case Type::kBool: case Type::kInt: case Type::kIndirectInt:
    case Type::kUInt: case Type::kIndirectUInt: {
      std::int64_t i = 0;
      Status s = AsInt64(&i);
      if (!s.ok) return s;
      *out = i != 0;
      return Status::Ok();
    }
    default:
      return Status::Error(std::string("is a ") + TypeName(type_) +
                           ", expected a bool");
  }
}

Status Value::AsString(std::string* out) const {
  if (type_ != Type::kString && type_ != Type::kKey) {
    return Status::Error(std::string("is a ") + TypeName(type_) +
                         ", expected a string");
  }
  std::size_t target = 0;
  Status s = Indirect(&target);
  if (!s.ok) return s;
  if (type_ == Type::kKey) {
    if (target >= size_) return Corrupt("key out of range");
    const void* nul = std::memchr(buf_ + target, 0, size_ - target);
    if (nul == nullptr) return Corrupt("unterminated key");
    const std::size_t len = static_cast<const std::uint8_t*>(nul) - (buf_ + target);
    out->assign(reinterpret_cast<const char*>(buf_ + target), len);
    return Status::Ok();
  }
  std::uint64_t len = 0;
  if (target < child_width_ ||
      !ReadUInt(buf_, size_, target - child_width_, child_width_, &len)) {
    return Corrupt("string size out of range");
  }
  // The bytes and their terminating NUL must lie inside the buffer.
  if (target >= size_ || len > size_ - target - 1 || buf_[target + len] != 0) {
    return Corrupt("string out of range");
  }
  out->assign(reinterpret_cast<const char*>(buf_ + target),
              static_cast<std::size_t>(len));
  return Status::Ok();
}

Status Map::Parse(const std::uint8_t* data, std::size_t size, Map* map) {
  if (data == nullptr || size < 3) return Corrupt("buffer too small");
  const std::uint8_t root_width = data[size - 1];
  const std::uint8_t root_packed = data[size - 2];
  if (!ValidWidth(root_width) || size < 2u + root_width) {
    return Corrupt("bad root width");
  }
  const Type root_type = static_cast<Type>(root_packed >> 2);
  if (root_type != Type::kMap) {
    return Status::Error(std::string("FlexBuffer root is a ") +
                         TypeName(root_type) + ", expected a map");
  }
  const std::uint8_t width = std::uint8_t{1} << (root_packed & 3);
  std::size_t values = 0;
  if (!Follow(data, size, size - 2 - root_width, root_width, &values)) {
    return Corrupt("root offset out of range");
  }
  // Header: [keys offset][keys width][count] before the values.
  if (values < 3u * width) return Corrupt("map header out of range");
  std::uint64_t count = 0, keys_width = 0;
  std::size_t keys = 0;
  if (!ReadUInt(data, size, values - width, width, &count) ||
      !ReadUInt(data, size, values - 2 * width, width, &keys_width) ||
      !Follow(data, size, values - 3 * width, width, &keys)) {
    return Corrupt("map header out of range");
  }
  if (!ValidWidth(keys_width)) return Corrupt("bad map key width");
  // Values (count * width) and their type bytes (count) must fit.
  if (values > size || count > (size - values) / (width + 1u)) {
    return Corrupt("map values out of range");
  }
  // Keys: a vector [count] keys: [count offsets of keys_width bytes].
  std::uint64_t key_count = 0;
  const std::uint8_t kw = static_cast<std::uint8_t>(keys_width);
  if (keys < kw || !ReadUInt(data, size, keys - kw, kw, &key_count) ||
      key_count != count || keys > size || count > (size - keys) / kw) {
    return Corrupt("map keys out of range");
  }
  map->buf_ = data;
  map->size_ = size;
  map->values_ = values;
  map->width_ = width;
  map->keys_ = keys;
  map->keys_width_ = kw;
  map->count_ = static_cast<std::size_t>(count);
  for (std::size_t i = 0; i < map->count_; ++i) {
    std::size_t pos = 0, len = 0;
    if (!map->KeyBytes(i, &pos, &len)) return Corrupt("map key out of range");
  }
  return Status::Ok();
}

bool Map::KeyBytes(std::size_t i, std::size_t* pos, std::size_t* len) const {
  if (i >= count_) return false;
  std::size_t target = 0;
  if (!Follow(buf_, size_, keys_ + i * keys_width_, keys_width_, &target) ||
      target >= size_) {
    return false;
  }
  const void* nul = std::memchr(buf_ + target, 0, size_ - target);
  if (nul == nullptr) return false;
  *pos = target;
  *len = static_cast<std::size_t>(static_cast<const std::uint8_t*>(nul) - (buf_ + target));
  return true;
}

std::string Map::KeyAt(std::size_t i) const {
  std::size_t pos = 0, len = 0;
  if (!KeyBytes(i, &pos, &len)) return std::string();
  return std::string(reinterpret_cast<const char*>(buf_ + pos), len);
}

bool Map::Find(const char* key, Value* value) const {
  const std::size_t key_len = std::strlen(key);
  // Linear scan: option maps are tiny, and unlike a binary search it does not
  // depend on the keys of a possibly corrupt buffer being sorted.
  for (std::size_t i = 0; i < count_; ++i) {
    std::size_t pos = 0, len = 0;
    if (!KeyBytes(i, &pos, &len)) continue;
    if (len != key_len || std::memcmp(buf_ + pos, key, len) != 0) continue;
    value->buf_ = buf_;
    value->size_ = size_;
    value->pos_ = values_ + i * width_;
    value->parent_width_ = width_;
    const std::uint8_t packed = buf_[values_ + count_ * width_ + i];
    value->child_width_ = std::uint8_t{1} << (packed & 3);
    value->type_ = static_cast<Type>(packed >> 2);
    return true;
  }
  return false;
}

namespace {

Status KeyError(const char* key, const Status& s) {
  return Status::Error(std::string("option '") + key + "' " + s.message);
}

bool FindOrError(const Map& map, const char* key, Value* value, Status* error) {
  if (map.Find(key, value)) return true;
  *error = Status::Error(std::string("missing option '") + key + "'");
  return false;
}

// Looks `key` up and converts its value with `convert` (one of Value::As*),
// naming the key in any error.
template <typename T>
Status GetConverted(const Map& map, const char* key, Status (Value::*convert)(T*) const,
                    T* out) {
  Value v;
  Status s;
  if (!FindOrError(map, key, &v, &s)) return s;
  s = (v.*convert)(out);
  return s.ok ? s : KeyError(key, s);
}

}  // namespace

Status GetInt(const Map& map, const char* key, std::int64_t* out) {
  Value v;
  if (map.Find(key, &v) && (v.type() == Type::kBool || v.type() == Type::kFloat ||
                            v.type() == Type::kIndirectFloat)) {
    return Status::Error(std::string("option '") + key + "' is a " +
                         TypeName(v.type()) + ", expected an integer");
  }
  return GetConverted(map, key, &Value::AsInt64, out);
}

Status GetString(const Map& map, const char* key, std::string* out) {
  return GetConverted(map, key, &Value::AsString, out);
}

Status GetFloat(const Map& map, const char* key, double* out) {
  return GetConverted(map, key, &Value::AsDouble, out);
}

Status GetBool(const Map& map, const char* key, bool* out) {
  return GetConverted(map, key, &Value::AsBool, out);
}

}  // namespace flex
}  // namespace lowbit
