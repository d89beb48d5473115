#include "cbpf.h"
int cbpf_placeholder(void) { return 0; }
