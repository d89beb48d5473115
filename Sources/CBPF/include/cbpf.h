#pragma once
int cbpf_placeholder(void);
