/*
** elf_load.h: a loader of the CPU kernels' object files without LLVM.
** hattn's CPU kernels are ELF64 x86-64 relocatable objects (ET_REL) made
** by hattn__llvm_write_object; this loader lays their allocated sections
** out in one mapping of its own, applies their RELA relocations, resolves
** the few library functions a kernel may call from a fixed table (no
** dlsym), and hands out the kernel's function.  It has no dependency on
** LLVM, so the runtime-only library can run kernels stored in the
** database.  Internal; not installed.
**
** The bytes are untrusted: every offset, size and index is checked against
** the buffer, and bad input fails with a sentence, never a crash.
** Implemented on x86-64 only (HATTN_ENOTSUP elsewhere).
*/
#ifndef HATTN_RUNTIME_ELF_LOAD_H
#define HATTN_RUNTIME_ELF_LOAD_H

#include <stddef.h>

/* A loaded object file: its memory (executable sections read and execute,
** the others read-only, writable ones read and write). */
typedef struct hattn__elf_image hattn__elf_image;

/*
** Load the ELF64 x86-64 relocatable object of SIZE bytes at BYTES (not
** kept after the call) into fresh memory, apply its relocations, and find
** the global function FN_NAME: *IMAGE (free with hattn__elf_unload, which
** unmaps the function too) and *FN.  Undefined symbols must be one of the
** library functions in the loader's table (memset, memcpy, memmove, the
** float and double libm functions LLVM lowers intrinsics to, and the
** half-precision conversions __extendhfsf2 and __truncsfhf2, the loader's
** own), or _GLOBAL_OFFSET_TABLE_, the image's GOT.
**
** Returns HATTN_OK; HATTN_EINVAL for a NULL or empty buffer or a NULL
** FN_NAME; HATTN_ECOMPILE for a malformed or unsupported object, an
** unresolved symbol or a missing function; HATTN_ENOMEM when memory cannot
** be mapped; HATTN_ENOTSUP off x86-64.  On failure *IMAGE and *FN are NULL
** and ERR (ERRLEN bytes) holds a sentence.
*/
int hattn__elf_load(const void *bytes, size_t size, const char *fn_name, hattn__elf_image **image,
                    void **fn, char *err, size_t errlen);

/* hattn__elf_load, and also the global function OPT_NAME when the object
** has one (*OPT_FN, else NULL; its absence is no error): an entry point
** that object files of an older hattn lack.  OPT_NAME and OPT_FN may be
** NULL. */
int hattn__elf_load2(const void *bytes, size_t size, const char *fn_name, const char *opt_name,
                     hattn__elf_image **image, void **fn, void **opt_fn, char *err, size_t errlen);

/* Unmap IMAGE and free it; NULL is allowed.  Its functions must not be
** running. */
void hattn__elf_unload(hattn__elf_image *image);

#endif /* HATTN_RUNTIME_ELF_LOAD_H */
