/* Raw PKCS#11 signing loop: the baseline the appliance's HSM pool is measured against.
 * One session per thread, C_Initialize with CKF_OS_LOCKING_OK, login once, 32-byte input
 * (a SHA-256 digest for CKM_ECDSA; the message for CKM_SHA256_RSA_PKCS), C_SignInit + C_Sign
 * with a preallocated buffer: the least work any caller can do per signature.
 * usage: p11raw <module> <token-label> <pin> <key-label> ecdsa|rsa <threads> <seconds>
 * Build: cc -O2 -pthread -I/usr/include/p11-kit-1 p11raw.c -ldl -o p11raw */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR f;
static CK_SLOT_ID slot;
static CK_OBJECT_HANDLE key;
static CK_MECHANISM mech;
static double seconds;
static volatile int stop;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void die(const char *what, CK_RV rv) { fprintf(stderr, "%s failed: 0x%lx\n", what, (unsigned long)rv); exit(1); }

static void *worker(void *arg) {
  long *count = arg;
  CK_SESSION_HANDLE s;
  CK_RV rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
  if (rv) die("C_OpenSession", rv);
  unsigned char data[32], sig[1024];
  memset(data, 0x5a, sizeof data);
  long n = 0;
  while (!stop) {
    CK_ULONG len = sizeof sig;
    if ((rv = f->C_SignInit(s, &mech, key))) die("C_SignInit", rv);
    if ((rv = f->C_Sign(s, data, sizeof data, sig, &len))) die("C_Sign", rv);
    n++;
  }
  *count = n;
  f->C_CloseSession(s);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 8) { fprintf(stderr, "usage: %s module token pin key ecdsa|rsa threads seconds\n", argv[0]); return 2; }
  void *lib = dlopen(argv[1], RTLD_NOW);
  if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
  CK_C_GetFunctionList gfl = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
  gfl(&f);
  CK_C_INITIALIZE_ARGS ia = {0};
  ia.flags = CKF_OS_LOCKING_OK;
  CK_RV rv = f->C_Initialize(&ia);
  if (rv) die("C_Initialize", rv);
  CK_SLOT_ID slots[64]; CK_ULONG ns = 64;
  if ((rv = f->C_GetSlotList(CK_TRUE, slots, &ns))) die("C_GetSlotList", rv);
  int found = 0;
  for (CK_ULONG i = 0; i < ns; i++) {
    CK_TOKEN_INFO ti;
    if (f->C_GetTokenInfo(slots[i], &ti)) continue;
    char label[33]; memcpy(label, ti.label, 32); label[32] = 0;
    for (int j = 31; j >= 0 && label[j] == ' '; j--) label[j] = 0;
    if (!strcmp(label, argv[2])) { slot = slots[i]; found = 1; }
  }
  if (!found) { fprintf(stderr, "token %s not found\n", argv[2]); return 1; }
  CK_SESSION_HANDLE s;
  if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s))) die("C_OpenSession", rv);
  if ((rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)argv[3], strlen(argv[3])))) die("C_Login", rv);
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, argv[4], strlen(argv[4])}};
  CK_ULONG nf = 0;
  f->C_FindObjectsInit(s, tmpl, 2); f->C_FindObjects(s, &key, 1, &nf); f->C_FindObjectsFinal(s);
  if (nf != 1) { fprintf(stderr, "key %s not found\n", argv[4]); return 1; }
  mech.mechanism = strcmp(argv[5], "rsa") ? CKM_ECDSA : CKM_SHA256_RSA_PKCS;
  int threads = atoi(argv[6]); seconds = atof(argv[7]);
  pthread_t t[64]; long counts[64] = {0};
  double t0 = now();
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, &counts[i]);
  struct timespec d = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
  nanosleep(&d, NULL);
  stop = 1;
  long total = 0;
  for (int i = 0; i < threads; i++) { pthread_join(t[i], NULL); total += counts[i]; }
  double el = now() - t0;
  printf("%.0f\n", total / el);
  f->C_Logout(s); f->C_CloseSession(s); f->C_Finalize(NULL);
  return 0;
}
