/*
** backend_nocompile.c: libhattnrt's registration of compilers: none.
** Its backends load kernels (registered or from the database) and compile
** none; a kernel found nowhere is HATTN_ENOTSUP (kernel_cache.c).
*/
#include "backend.h"

void hattn__backend_register_compilers(void) {}
