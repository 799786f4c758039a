#include "custom_ops/core/op_shapes.h"

#include <string>

namespace lowbit {
namespace {

std::string Str(std::int64_t v) { return std::to_string(v); }

// No negative dimension, and the last one (depth) is channels_in values or,
// packed, their words.
Status CheckInput(const Shape& input, bool packed_input, std::int64_t channels_in) {
  for (std::int64_t d : input.dims) {
    if (d < 0) return Status::Error("input has a negative dimension: " + input.ToString());
  }
  const std::int64_t depth = input.dims[input.rank() - 1];
  const std::int64_t expected_depth = packed_input ? PackedWords(channels_in) : channels_in;
  if (depth != expected_depth) {
    return Status::Error("input depth " + Str(depth) +
                         (packed_input ? " (packed words)" : " (channels)") +
                         " does not match channels_in = " + Str(channels_in) + ", expected " +
                         Str(expected_depth) + " (input shape " + input.ToString() + ")");
  }
  return Status::Ok();
}

// A compact filter's words per output channel against the conv options
// (which passed CheckBConv2DOptions, so the count cannot overflow).
Status CheckCompactFilterWords(std::int64_t words, const BConv2DParams& p) {
  const std::int64_t want = CompactFilterWords(p.kernel_h, p.kernel_w, p.channels_in);
  if (words == want) return Status::Ok();
  return Status::Error("filter has " + Str(words) +
                       " packed words per output channel, but kernel " + Str(p.kernel_h) + "x" +
                       Str(p.kernel_w) + " with channels_in = " + Str(p.channels_in) +
                       " needs " + Str(want) + " = ceil(kernel_h * kernel_w * channels_in / 32)");
}

// multiplier and bias are [out_channels]; `why` says where that comes from.
Status CheckTransform(const Shape& multiplier, const Shape& bias, std::int64_t out_channels,
                      const char* why = "the filter's output channels") {
  const struct {
    const char* name;
    const Shape& shape;
  } vectors[] = {{"multiplier", multiplier}, {"bias", bias}};
  for (const auto& v : vectors) {
    if (v.shape.rank() != 1 || v.shape.dims[0] != out_channels) {
      return Status::Error(std::string(v.name) + " must have shape [" + Str(out_channels) +
                           "] (" + why + "), got " + v.shape.ToString());
    }
  }
  return Status::Ok();
}

}  // namespace

std::string Shape::ToString() const {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + Str(dims[i]);
  return s + "]";
}

Status CheckBConv2DShapes(const Shape& input, bool packed_input, const Shape& filter,
                          bool float_filter, const Shape& multiplier, const Shape& bias,
                          OutputType output_type, BConv2DParams* p, Shape* output) {
  const int rank = input.rank();
  if (rank < 4) {
    return Status::Error("input must be 4-D NHWC or of higher rank [..., H, W, C], got shape " +
                         input.ToString());
  }
  Status s = CheckInput(input, packed_input, p->channels_in);
  if (!s.ok) return s;
  std::int64_t out_channels = 0;
  if (float_filter) {
    // The Keras kernel, HWIO (training through the TF op).
    const std::vector<std::int64_t>& f = filter.dims;
    if (filter.rank() != 4 || f[0] != p->kernel_h || f[1] != p->kernel_w ||
        f[2] != p->channels_in || f[3] < 1) {
      return Status::Error("a float filter must be the HWIO kernel [" + Str(p->kernel_h) + ", " +
                           Str(p->kernel_w) + ", " + Str(p->channels_in) + ", C_out], got shape " +
                           filter.ToString());
    }
    out_channels = f[3];
  } else {
    if (filter.rank() != 2) {
      return Status::Error("filter must be 2-D [C_out, words], got shape " + filter.ToString());
    }
    s = CheckCompactFilterWords(filter.dims[1], *p);
    if (!s.ok) return s;
    out_channels = filter.dims[0];
    if (out_channels < 1) {
      return Status::Error("filter has no output channels: " + filter.ToString());
    }
  }
  s = CheckTransform(multiplier, bias, out_channels);
  if (!s.ok) return s;
  // The leading dimensions are the batch.
  if (!FlattenDims(input.dims.data(), rank - 3, &p->batch)) {
    return Status::Error("too many images in input " + input.ToString());
  }
  p->in_h = input.dims[rank - 3];
  p->in_w = input.dims[rank - 2];
  p->out_channels = out_channels;
  s = ComputeBConv2DGeometry(p);
  if (!s.ok) return s;
  *output = input;
  output->dims[rank - 3] = p->out_h;
  output->dims[rank - 2] = p->out_w;
  output->dims[rank - 1] =
      output_type == OutputType::kBitpacked ? PackedWords(out_channels) : out_channels;
  return Status::Ok();
}

Status CheckBGemmShapes(const Shape& input, bool packed_input, const Shape& filter,
                        bool float_filter, const Shape& multiplier, const Shape& bias,
                        OutputType output_type, BGemmParams* p, Shape* output) {
  const int rank = input.rank();
  if (rank < 1) return Status::Error("input must have rank >= 1 [..., K], got a scalar");
  Status s = CheckInput(input, packed_input, p->channels_in);
  if (!s.ok) return s;
  std::int64_t out_channels = 0;
  if (float_filter) {
    // The Keras kernel [K, N_out] (training through the TF op).
    if (filter.rank() != 2 || filter.dims[0] != p->channels_in) {
      return Status::Error("a float filter must be the Keras kernel [" + Str(p->channels_in) +
                           ", N_out], got shape " + filter.ToString());
    }
    out_channels = filter.dims[1];
  } else {
    if (filter.rank() != 2 || filter.dims[1] != p->words()) {
      return Status::Error("filter must be [N_out, " + Str(p->words()) + "] (rank 2: " +
                           "ceil(channels_in / 32) packed words per output channel, " +
                           "channels_in = " + Str(p->channels_in) + "), got shape " +
                           filter.ToString());
    }
    out_channels = filter.dims[0];
  }
  s = CheckTransform(multiplier, bias, out_channels);
  if (!s.ok) return s;
  // The leading dimensions are the rows.
  if (!FlattenDims(input.dims.data(), rank - 1, &p->rows)) {
    return Status::Error("too many rows in input " + input.ToString());
  }
  p->out_channels = out_channels;
  s = CheckBGemmShape(*p);
  if (!s.ok) return s;
  *output = input;
  output->dims[rank - 1] =
      output_type == OutputType::kBitpacked ? PackedWords(out_channels) : out_channels;
  return Status::Ok();
}

Status CheckBMaxPool2DShapes(const Shape& input, BMaxPool2DParams* p, Shape* output) {
  const int rank = input.rank();
  if (rank < 4) {
    return Status::Error("input must be 4-D packed NHWC or of higher rank [..., H, W, words], "
                         "got shape " + input.ToString());
  }
  for (std::int64_t d : input.dims) {
    if (d < 0) return Status::Error("input has a negative dimension: " + input.ToString());
  }
  if (input.dims[rank - 1] != p->words()) {
    return Status::Error("input depth " + Str(input.dims[rank - 1]) +
                         " (packed words) does not match channels = " + Str(p->channels) +
                         ", expected " + Str(p->words()) + " (input shape " + input.ToString() +
                         ")");
  }
  // The leading dimensions are the batch.
  if (!FlattenDims(input.dims.data(), rank - 3, &p->batch)) {
    return Status::Error("too many images in input " + input.ToString());
  }
  p->in_h = input.dims[rank - 3];
  p->in_w = input.dims[rank - 2];
  Status s = ComputeBMaxPool2DGeometry(p);
  if (!s.ok) return s;
  *output = input;
  output->dims[rank - 3] = p->out_h;
  output->dims[rank - 2] = p->out_w;
  return Status::Ok();
}

Status CheckBDepthwiseConv2DShapes(const Shape& input, bool packed_input, const Shape& filter,
                                   const Shape& multiplier, const Shape& bias,
                                   OutputType output_type, BDepthwiseConv2DParams* p,
                                   Shape* output) {
  const int rank = input.rank();
  if (rank < 4) {
    return Status::Error("input must have rank >= 4 [..., H, W, C], got shape " +
                         input.ToString());
  }
  Status s = CheckInput(input, packed_input, p->channels_in);
  if (!s.ok) return s;
  const std::int64_t out_channels = p->out_channels();
  if (filter.rank() != 3 || filter.dims[0] != p->kernel_h || filter.dims[1] != p->kernel_w ||
      filter.dims[2] != p->out_words()) {
    return Status::Error("filter must have shape [" + Str(p->kernel_h) + ", " +
                         Str(p->kernel_w) + ", " + Str(p->out_words()) +
                         "] (kernel_h, kernel_w, packed words of channels_in * "
                         "depth_multiplier = " + Str(out_channels) + "), got " +
                         filter.ToString());
  }
  s = CheckTransform(multiplier, bias, out_channels, "channels_in * depth_multiplier");
  if (!s.ok) return s;
  // The leading dimensions are the batch.
  if (!FlattenDims(input.dims.data(), rank - 3, &p->batch)) {
    return Status::Error("too many images in input " + input.ToString());
  }
  p->in_h = input.dims[rank - 3];
  p->in_w = input.dims[rank - 2];
  s = ComputeBDepthwiseConv2DGeometry(p);
  if (!s.ok) return s;
  *output = input;
  output->dims[rank - 3] = p->out_h;
  output->dims[rank - 2] = p->out_w;
  output->dims[rank - 1] =
      output_type == OutputType::kBitpacked ? p->out_words() : out_channels;
  return Status::Ok();
}

Status CheckMultibitConv2DShapes(const Shape& input, bool packed_input, const Shape& filter,
                                 const Shape& alphas, const Shape& shifts, const Shape& betas,
                                 const Shape& bias, OutputType output_type,
                                 MultibitConv2DParams* p, Shape* output) {
  const int rank = input.rank();
  if (rank < 4) {
    return Status::Error("input must have rank >= 4 [..., H, W, C], got shape " +
                         input.ToString());
  }
  Status s = CheckMultibitConv2DTypes(
      *p, packed_input ? MultibitInputType::kPacked : MultibitInputType::kFloat);
  if (!s.ok) return s;
  s = CheckInput(input, packed_input, p->conv.channels_in);
  if (!s.ok) return s;
  if (filter.rank() != 3) {
    return Status::Error("filter must have rank 3 [M, C_out, words], got shape " +
                         filter.ToString());
  }
  s = CheckCompactFilterWords(filter.dims[2], p->conv);
  if (!s.ok) return s;
  p->weight_planes = filter.dims[0];
  const std::int64_t cout = filter.dims[1];
  if (cout < 1) return Status::Error("filter has no output channels: " + filter.ToString());
  if (alphas.rank() != 2 || alphas.dims[0] != p->weight_planes || alphas.dims[1] != cout) {
    return Status::Error("alphas must have shape [" + Str(p->weight_planes) + ", " + Str(cout) +
                         "] (weight planes, output channels), got " + alphas.ToString());
  }
  if (shifts.rank() != 1) {
    return Status::Error("shifts must have rank 1, got shape " + shifts.ToString());
  }
  if (bias.rank() != 1 || bias.dims[0] != cout) {
    return Status::Error("bias must have shape [" + Str(cout) +
                         "] (the filter's output channels), got " + bias.ToString());
  }
  p->num_shifts = shifts.dims[0];
  // The leading dimensions are the batch.
  if (!FlattenDims(input.dims.data(), rank - 3, &p->conv.batch)) {
    return Status::Error("too many images in input " + input.ToString());
  }
  p->conv.in_h = input.dims[rank - 3];
  p->conv.in_w = input.dims[rank - 2];
  p->conv.out_channels = cout;
  s = ComputeMultibitConv2DGeometry(p);
  if (!s.ok) return s;
  if (betas.rank() != 1 || betas.dims[0] != p->activation_planes()) {
    return Status::Error("betas must have shape [" + Str(p->activation_planes()) +
                         "] (one per activation plane), got " + betas.ToString());
  }
  *output = input;
  output->dims[rank - 3] = p->conv.out_h;
  output->dims[rank - 2] = p->conv.out_w;
  output->dims[rank - 1] = output_type == OutputType::kBitpacked ? PackedWords(cout) : cout;
  return Status::Ok();
}

Status CheckFastfoodShapes(const Shape& x, const Shape& b, const Shape& g, const Shape& s_diag,
                           const Shape& permutation, const Shape& bias, FastfoodParams* p,
                           Shape* output) {
  const int rank = x.rank();
  if (rank < 1) return Status::Error("x must have rank >= 1, got a scalar");
  for (std::int64_t d : x.dims) {
    if (d < 0) return Status::Error("x has a negative dimension: " + x.ToString());
  }
  if (b.rank() != 2) {
    return Status::Error("b must have rank 2 [k, n], got shape " + b.ToString());
  }
  const struct {
    const char* name;
    const Shape& shape;
  } same_as_b[] = {{"g", g}, {"s", s_diag}, {"permutation", permutation}};
  for (const auto& t : same_as_b) {
    if (t.shape.dims != b.dims) {
      return Status::Error(std::string(t.name) + " has shape " + t.shape.ToString() +
                           ", expected the shape of b " + b.ToString());
    }
  }
  if (bias.rank() != 1 || (bias.dims[0] != 0 && bias.dims[0] != p->units)) {
    return Status::Error("bias must be [units] = [" + Str(p->units) +
                         "] or [0] (no bias), got shape " + bias.ToString());
  }
  // The leading dimensions are the rows.
  if (!FlattenDims(x.dims.data(), rank - 1, &p->rows)) {
    return Status::Error("x has too many rows: " + x.ToString());
  }
  p->input_dim = x.dims[rank - 1];
  p->blocks = b.dims[0];
  p->block_size = b.dims[1];
  Status s = CheckFastfoodParams(*p);
  if (!s.ok) return s;
  *output = x;
  output->dims[rank - 1] = p->units;
  return Status::Ok();
}

}  // namespace lowbit
