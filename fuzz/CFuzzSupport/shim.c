// Intentionally empty: CFuzzSupport only declares libFuzzer's driver (include/CFuzzSupport.h).
#include "CFuzzSupport.h"
