// libtorch's autocast type per device, which tch 0.24 does not expose: it only
// switches CUDA autocast on and off, always with libtorch's default type (fp16).
// The training loop needs bf16 (the paper's setting, and no loss scaling).
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/macros/Export.h>

namespace at::autocast {
TORCH_API bool is_autocast_enabled(c10::DeviceType device_type);
TORCH_API void set_autocast_enabled(c10::DeviceType device_type, bool enabled);
TORCH_API c10::ScalarType get_autocast_dtype(c10::DeviceType device_type);
TORCH_API void set_autocast_dtype(c10::DeviceType device_type, c10::ScalarType dtype);
TORCH_API void clear_cache();
TORCH_API int increment_nesting();
TORCH_API int decrement_nesting();
}  // namespace at::autocast

namespace {
c10::DeviceType device_type(int device) { return device == 1 ? c10::DeviceType::CUDA : c10::DeviceType::CPU; }
}  // namespace

extern "C" {
// device: 0 = CPU, 1 = CUDA. dtype: a c10::ScalarType code (tch's Kind codes are the same).
int vitrine_autocast_dtype(int device) { return static_cast<int>(at::autocast::get_autocast_dtype(device_type(device))); }

void vitrine_set_autocast_dtype(int device, int dtype) {
  at::autocast::set_autocast_dtype(device_type(device), static_cast<c10::ScalarType>(dtype));
}

bool vitrine_autocast_enabled(int device) { return at::autocast::is_autocast_enabled(device_type(device)); }

void vitrine_set_autocast_enabled(int device, bool enabled) { at::autocast::set_autocast_enabled(device_type(device), enabled); }

int vitrine_autocast_increment_nesting() { return at::autocast::increment_nesting(); }

// Casts made under autocast are cached until the outermost region ends.
void vitrine_autocast_decrement_nesting() {
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
}
}
