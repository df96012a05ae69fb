/*
** cpu_jit.c: the LLVM JIT host and object files of the CPU backend.  See
** cpu.h.  Every LLVM call that depends on LLVM's version lives here or in
** gen/emit_llvm.c.  Without HATTN_HAVE_LLVM every function reports
** HATTN_ENOTSUP.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "cpu.h"
#include "emit_llvm.h"

#define NO_LLVM_MSG "hattn was built without LLVM: the CPU backend is off"

#ifdef HATTN_HAVE_LLVM

#include <pthread.h>
#include <stdatomic.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <llvm/Config/llvm-config.h>

struct hattn__jit {
  LLVMOrcLLJITRef lljit;
  char *triple;                 /* LLVM-owned (LLVMDisposeMessage) */
  char *cpu;                    /* LLVM-owned */
  char *features;               /* LLVM-owned */
  int vec;
  atomic_long counter;          /* for unique function names */
};

static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;
static int g_init_ok;

static void init_llvm(void) {
  g_init_ok = LLVMInitializeNativeTarget() == 0 && LLVMInitializeNativeAsmPrinter() == 0;
}

/* Copy an LLVMErrorRef's message into ERR and consume it. */
static void take_error(LLVMErrorRef e, const char *what, char *err, size_t errlen) {
  char *msg = LLVMGetErrorMessage(e);
  snprintf(err, errlen, "%s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
}

/* A target machine for TRIPLE, CPU and FEATURES, or NULL with ERR set. */
static LLVMTargetMachineRef make_tm(const char *triple, const char *cpu, const char *features,
                                    LLVMRelocMode reloc, LLVMCodeModel model, char *err,
                                    size_t errlen) {
  LLVMTargetRef target;
  char *msg = NULL;
  LLVMTargetMachineRef tm;
  if (LLVMGetTargetFromTriple(triple, &target, &msg) != 0) {
    snprintf(err, errlen, "LLVM has no target for %s: %s", triple, msg ? msg : "");
    LLVMDisposeMessage(msg);
    return NULL;
  }
  tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive, reloc,
                               model);
  if (tm == NULL) snprintf(err, errlen, "LLVM could not make a target machine for CPU '%s'", cpu);
  return tm;
}

/* Verify and optimise MOD (default<O3>) for TM. */
static int optimise(LLVMModuleRef mod, LLVMTargetMachineRef tm, char *err, size_t errlen) {
  char *msg = NULL;
  LLVMPassBuilderOptionsRef opts;
  LLVMErrorRef e;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg) != 0) {
    snprintf(err, errlen, "the generated kernel is malformed (an emitter bug): %s", msg ? msg : "");
    LLVMDisposeMessage(msg);
    return HATTN_ECOMPILE;
  }
  LLVMDisposeMessage(msg);
  opts = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(opts, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(opts, 1);
  LLVMPassBuilderOptionsSetLoopUnrolling(opts, 1);
  e = LLVMRunPasses(mod, "default<O3>", tm, opts);
  LLVMDisposePassBuilderOptions(opts);
  if (e != NULL) {
    take_error(e, "LLVM optimisation failed", err, errlen);
    return HATTN_ECOMPILE;
  }
  return HATTN_OK;
}

int hattn__jit_create(hattn__jit **out, char *err, size_t errlen) {
  hattn__jit *jit;
  LLVMTargetMachineRef tm;
  LLVMOrcJITTargetMachineBuilderRef jtmb;
  LLVMOrcLLJITBuilderRef builder;
  LLVMOrcDefinitionGeneratorRef gen;
  LLVMErrorRef e;
  int rc;

  *out = NULL;
  pthread_once(&g_init_once, init_llvm);
  if (!g_init_ok) {
    snprintf(err, errlen, "LLVM could not initialise the native target");
    return HATTN_ENOTSUP;
  }
  jit = calloc(1, sizeof *jit);
  if (jit == NULL) {
    snprintf(err, errlen, "out of memory");
    return HATTN_ENOMEM;
  }
  atomic_init(&jit->counter, 0);
  jit->triple = LLVMGetDefaultTargetTriple();
  jit->cpu = LLVMGetHostCPUName();
  jit->features = LLVMGetHostCPUFeatures();
  jit->vec = strstr(jit->features, "+avx512f") != NULL ? 16 : 8;

  tm = make_tm(jit->triple, jit->cpu, jit->features, LLVMRelocDefault, LLVMCodeModelJITDefault,
               err, errlen);
  if (tm == NULL) {
    rc = HATTN_ENOTSUP;
    goto fail_tm;
  }
  /* The builder takes the target machine, and LLJIT takes the builder. */
  jtmb = LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm);
  builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb);
  e = LLVMOrcCreateLLJIT(&jit->lljit, builder);
  if (e != NULL) {
    take_error(e, "LLVM could not create a JIT", err, errlen);
    rc = HATTN_ENOTSUP;
    goto fail_tm;
  }
  e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
      &gen, LLVMOrcLLJITGetGlobalPrefix(jit->lljit), NULL, NULL);
  if (e != NULL) {
    take_error(e, "LLVM could not search the process for symbols", err, errlen);
    rc = HATTN_ENOTSUP;
    goto fail_jit;
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(jit->lljit), gen);
  *out = jit;
  return HATTN_OK;

fail_jit:
  LLVMOrcDisposeLLJIT(jit->lljit);
fail_tm:
  LLVMDisposeMessage(jit->triple);
  LLVMDisposeMessage(jit->cpu);
  LLVMDisposeMessage(jit->features);
  free(jit);
  return rc;
}

void hattn__jit_destroy(hattn__jit *jit) {
  LLVMErrorRef e;
  if (jit == NULL) return;
  e = LLVMOrcDisposeLLJIT(jit->lljit);
  if (e != NULL) LLVMConsumeError(e);
  LLVMDisposeMessage(jit->triple);
  LLVMDisposeMessage(jit->cpu);
  LLVMDisposeMessage(jit->features);
  free(jit);
}

const char *hattn__jit_cpu_name(const hattn__jit *jit) { return jit->cpu; }

int hattn__jit_vec(const hattn__jit *jit) { return jit->vec; }

int hattn__jit_compile(hattn__jit *jit, const hattn__kernel_desc *desc,
                       const hattn__cpu_config *cfg, hattn__cpu_fn *fn, char *err,
                       size_t errlen) {
  char name[64];
  LLVMOrcThreadSafeContextRef tsc;
  LLVMOrcThreadSafeModuleRef tsm;
  LLVMModuleRef mod = NULL;
  LLVMTargetMachineRef tm;
  LLVMOrcExecutorAddress addr = 0;
  LLVMErrorRef e;
  int rc;

  *fn = NULL;
  snprintf(name, sizeof name, "hattn_cpu_kernel_%ld", (long)atomic_fetch_add(&jit->counter, 1));
  tsc = LLVMOrcCreateNewThreadSafeContext();
  rc = hattn__emit_llvm(LLVMOrcThreadSafeContextGetContext(tsc), desc, cfg, name, cfg->vec == 16,
                        &mod, err, errlen);
  if (rc != HATTN_OK) goto fail_ctx;
  LLVMSetTarget(mod, LLVMOrcLLJITGetTripleString(jit->lljit));
  LLVMSetDataLayout(mod, LLVMOrcLLJITGetDataLayoutStr(jit->lljit));
  /* A target machine per compile: compiles may run on several threads. */
  tm = make_tm(jit->triple, jit->cpu, jit->features, LLVMRelocDefault, LLVMCodeModelJITDefault,
               err, errlen);
  if (tm == NULL) {
    rc = HATTN_ECOMPILE;
    goto fail_mod;
  }
  rc = optimise(mod, tm, err, errlen);
  LLVMDisposeTargetMachine(tm);
  if (rc != HATTN_OK) goto fail_mod;
  tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc); /* owns MOD now */
  mod = NULL;
  e = LLVMOrcLLJITAddLLVMIRModule(jit->lljit, LLVMOrcLLJITGetMainJITDylib(jit->lljit), tsm);
  if (e != NULL) {
    LLVMOrcDisposeThreadSafeModule(tsm);
    take_error(e, "LLVM could not add the kernel", err, errlen);
    rc = HATTN_ECOMPILE;
    goto fail_ctx;
  }
  e = LLVMOrcLLJITLookup(jit->lljit, &addr, name);
  if (e != NULL) {
    take_error(e, "LLVM could not compile the kernel", err, errlen);
    rc = HATTN_ECOMPILE;
    goto fail_ctx;
  }
  LLVMOrcDisposeThreadSafeContext(tsc);
  *fn = (hattn__cpu_fn)(uintptr_t)addr;
  return HATTN_OK;

fail_mod:
  if (mod != NULL) LLVMDisposeModule(mod);
fail_ctx:
  LLVMOrcDisposeThreadSafeContext(tsc);
  return rc;
}

int hattn__llvm_write_object(const hattn__kernel_desc *desc,
                             const hattn__cpu_config *cfg, const char *fn_name,
                             const char *cpu, const char *path, char *err, size_t errlen) {
  char *triple, *host_cpu = NULL, *host_features = NULL, *msg = NULL, *dl;
  LLVMContextRef ctx;
  LLVMModuleRef mod = NULL;
  LLVMTargetMachineRef tm;
  LLVMTargetDataRef td;
  int rc;

  pthread_once(&g_init_once, init_llvm);
  if (!g_init_ok) {
    snprintf(err, errlen, "LLVM could not initialise the native target");
    return HATTN_ENOTSUP;
  }
  triple = LLVMGetDefaultTargetTriple();
  if (cpu == NULL) {
    host_cpu = LLVMGetHostCPUName();
    host_features = LLVMGetHostCPUFeatures();
  }
  tm = make_tm(triple, cpu ? cpu : host_cpu, cpu ? "" : host_features, LLVMRelocPIC,
               LLVMCodeModelDefault, err, errlen);
  if (tm == NULL) {
    rc = HATTN_EINVAL;
    goto fail_tm;
  }
  ctx = LLVMContextCreate();
  rc = hattn__emit_llvm(ctx, desc, cfg, fn_name, cfg->vec == 16, &mod, err, errlen);
  if (rc != HATTN_OK) goto fail_ctx;
  LLVMSetTarget(mod, triple);
  td = LLVMCreateTargetDataLayout(tm);
  dl = LLVMCopyStringRepOfTargetData(td);
  LLVMSetDataLayout(mod, dl);
  LLVMDisposeMessage(dl);
  LLVMDisposeTargetData(td);
  rc = optimise(mod, tm, err, errlen);
  if (rc != HATTN_OK) goto fail_mod;
  if (LLVMTargetMachineEmitToFile(tm, mod, (char *)path, LLVMObjectFile, &msg) != 0) {
    snprintf(err, errlen, "could not write the object file %s: %s", path, msg ? msg : "");
    LLVMDisposeMessage(msg);
    rc = HATTN_EIO;
    goto fail_mod;
  }
  rc = HATTN_OK;

fail_mod:
  LLVMDisposeModule(mod);
fail_ctx:
  LLVMContextDispose(ctx);
  LLVMDisposeTargetMachine(tm);
fail_tm:
  LLVMDisposeMessage(host_cpu);
  LLVMDisposeMessage(host_features);
  LLVMDisposeMessage(triple);
  return rc;
}

const char *hattn__llvm_version(void) { return LLVM_VERSION_STRING; }

#else /* !HATTN_HAVE_LLVM */

int hattn__jit_create(hattn__jit **out, char *err, size_t errlen) {
  *out = NULL;
  snprintf(err, errlen, NO_LLVM_MSG);
  return HATTN_ENOTSUP;
}

void hattn__jit_destroy(hattn__jit *jit) { (void)jit; }

const char *hattn__jit_cpu_name(const hattn__jit *jit) {
  (void)jit;
  return "none";
}

int hattn__jit_vec(const hattn__jit *jit) {
  (void)jit;
  return 8;
}

int hattn__jit_compile(hattn__jit *jit, const hattn__kernel_desc *desc,
                       const hattn__cpu_config *cfg, hattn__cpu_fn *fn, char *err,
                       size_t errlen) {
  (void)jit;
  (void)desc;
  (void)cfg;
  *fn = NULL;
  snprintf(err, errlen, NO_LLVM_MSG);
  return HATTN_ENOTSUP;
}

int hattn__llvm_write_object(const hattn__kernel_desc *desc,
                             const hattn__cpu_config *cfg, const char *fn_name,
                             const char *cpu, const char *path, char *err, size_t errlen) {
  (void)desc;
  (void)cfg;
  (void)fn_name;
  (void)cpu;
  (void)path;
  snprintf(err, errlen, NO_LLVM_MSG);
  return HATTN_ENOTSUP;
}

const char *hattn__llvm_version(void) { return NULL; }

#endif /* HATTN_HAVE_LLVM */
