/*
 * nvmlsim.c - a simulated NVIDIA Management Library (libnvidia-ml.so.1).
 *
 * There is no GPU on the test machines.  This library exports the real NVML
 * entry points (compiled against the real nvml.h with
 * -DNVML_NO_UNVERSIONED_FUNC_DEFS, so the exported names are the versioned
 * symbols the real library exports) and answers them from a plain-text state
 * file, so that the real pynvml, gpustat and nvitop run unmodified against a
 * simulated 8x H100 SXM node and tests can inject faults.
 *
 * State file: path in $JUEYING_NVMLSIM_STATE, re-read on every nvmlInit* and,
 * while initialised, whenever the file is replaced or changed (checked at
 * most every 50 ms): a real driver's readings are live, and a long-lived
 * NVML session (jueying's probe in serve mode) must see injected faults.
 * Missing variable or file -> built-in defaults.  Format: one "key = value"
 * per line, '#' starts a comment line, later lines override earlier ones,
 * unknown keys are ignored.  The keys and their defaults are listed in
 * k_global_defaults / k_gpu_defaults / gpu_computed_default() below and
 * mirrored by default_state() in tests/nvmlsim/__init__.py.
 *
 * Checked, in this order, at the top of every entry point:
 *   - no successful nvmlInit* outstanding   -> NVML_ERROR_UNINITIALIZED
 *   - gpu.N.lost = 1                        -> NVML_ERROR_GPU_IS_LOST for every
 *                                              call on GPU N (handles included)
 *   - gpu.N.fail.<symbol> = ERR             -> that call on GPU N returns ERR
 *                                              (even SUCCESS: it overrides ...)
 *   - fail.<symbol> = ERR                   -> ... this one, for every call
 *
 * Missing functions (an old driver): every entry point is wrapped in
 * #ifndef NVMLSIM_OMIT_<symbol>, so -DNVMLSIM_OMIT_<symbol> drops the export.
 * Functions that are not implemented here are simply absent, as on a driver
 * that predates them.
 *
 * Build (see build_library() in __init__.py):
 *   gcc -std=c99 -shared -fPIC -O1 -Wall -Wextra -Werror
 *       -DNVML_NO_UNVERSIONED_FUNC_DEFS -I<dir of nvml.h>
 *       -Wl,-soname,libnvidia-ml.so.1 -o libnvidia-ml.so.1 nvmlsim.c -pthread
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nvml.h>

#define SIM_MAX_GPUS 64
#define SIM_VALUE_MAX 512
#define SIM_STATE_ENV "JUEYING_NVMLSIM_STATE"

/* ------------------------------------------------------------------------ */
/* Defaults: an idle 8x NVIDIA H100 80GB HBM3 SXM node.                      */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *key;
    const char *value;
} sim_pair_t;

static const sim_pair_t k_global_defaults[] = {
    {"init", "SUCCESS"},
    {"driver_version", "550.127.05"},
    {"cuda_driver_version", "12040"},
    {"nvml_version", "12.550.127.05"},
    {"gpu_count", "8"},
};

/* Per-GPU defaults that are the same on every GPU (key without "gpu.N."). */
static const sim_pair_t k_gpu_defaults[] = {
    {"name", "NVIDIA H100 80GB HBM3"},
    {"vbios_version", "96.00.99.00.01"},
    {"brand", "14"},                      /* NVML_BRAND_NVIDIA */
    {"architecture", "9"},                /* NVML_DEVICE_ARCH_HOPPER */
    {"memory_total_bytes", "85520809984"},
    {"memory_used_bytes", "587202560"},   /* 560 MiB, includes reserved */
    {"memory_reserved_bytes", "583008256"}, /* 556 MiB of the used amount */
    {"utilization_gpu_pct", "0"},
    {"utilization_memory_pct", "0"},
    {"temperature_slowdown_c", "87"},
    {"temperature_shutdown_c", "92"},
    {"temperature_max_gpu_c", "85"},
    {"temperature_mem_max_c", "95"},
    {"power_mw", "70000"},
    {"power_limit_mw", "700000"},
    {"power_default_limit_mw", "700000"},
    {"power_min_limit_mw", "200000"},
    {"power_max_limit_mw", "700000"},
    {"clock_sm_mhz", "345"},
    {"clock_mem_mhz", "2619"},
    {"clock_video_mhz", "765"},
    {"clock_sm_max_mhz", "1980"},
    {"clock_mem_max_mhz", "2619"},
    {"clock_video_max_mhz", "1755"},
    {"clocks_event_reasons", "0x1"},      /* nvmlClocksEventReasonGpuIdle */
    {"pstate", "0"},
    {"persistence_mode", "1"},
    {"compute_mode", "0"},
    {"ecc_mode_current", "1"},
    {"ecc_mode_pending", "1"},
    {"ecc_corrected_volatile", "0"},
    {"ecc_corrected_aggregate", "0"},
    {"ecc_uncorrected_volatile", "0"},
    {"ecc_uncorrected_aggregate", "0"},
    {"retired_pages_sbe", "0"},
    {"retired_pages_dbe", "0"},
    {"retired_pages_pending", "0"},
    {"remapped_rows_corrected", "0"},
    {"remapped_rows_uncorrected", "0"},
    {"remapped_rows_pending", "0"},
    {"remapped_rows_failure", "0"},
    {"pcie_gen_current", "5"},
    {"pcie_gen_max", "5"},
    {"pcie_width_current", "16"},
    {"pcie_width_max", "16"},
    {"pcie_replay_counter", "0"},
    {"nvlink_count", "18"},
    {"nvlink_down", ""},
    {"mig_mode_current", "0"},
    {"mig_mode_pending", "0"},
    {"energy_mj", "3600000000"},          /* 1 kWh since the driver was loaded */
    {"processes", ""},
    {"lost", "0"},
};

/* PCI bus numbers of the eight GPUs of an HGX H100 board. */
static const unsigned k_pci_buses[8] = {0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB};

/* Per-GPU defaults that depend on the GPU index.  Returns 0 if `field` is not one. */
static int gpu_computed_default(unsigned idx, const char *field, char *out, size_t n)
{
    if (strcmp(field, "uuid") == 0) {
        snprintf(out, n, "GPU-%08x-5c3e-%04x-9b7d-%012llx", 0x8d1f6b20u + idx * 0x1111u,
                 0x4a10u + idx, 0x2e4c6a8f0000ULL + idx);
    } else if (strcmp(field, "serial") == 0) {
        snprintf(out, n, "%llu", 1654823010017ULL + 101ULL * idx);
    } else if (strcmp(field, "pci_bus_id") == 0) {
        /* GPUs beyond the eighth live on further PCI domains. */
        snprintf(out, n, "%08X:%02X:00.0", idx / 8, k_pci_buses[idx % 8]);
    } else if (strcmp(field, "temperature_c") == 0) {
        snprintf(out, n, "%u", 30 + idx);
    } else {
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* State file: parser and lookup.                                           */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *key;
    char *value;
} sim_entry_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static sim_entry_t *g_entries;  /* in file order; guarded by g_lock */
static size_t g_nentries;
/* Open-addressing index over g_entries: slot -> entry number + 1 (0: empty),
 * the last occurrence of each key.  Every entry point looks up three or four
 * keys (lost, two fault injections, the value), mostly absent ones; a linear
 * scan of the ~450 entries made the simulator, not the caller, the cost of a
 * call.  Guarded by g_lock. */
static size_t *g_slots;
static size_t g_nslots;         /* a power of two, at least twice g_nentries */
static size_t g_capacity;
static unsigned g_init_refs;    /* nvmlInit* minus nvmlShutdown; guarded by g_lock */
static struct stat g_loaded;    /* the state file as last loaded (st_ino 0: none); guarded by g_lock */
static struct timespec g_checked; /* when the file was last compared with g_loaded; guarded by g_lock */

/* Device handles are pointers into this array: GPU i's handle is &g_devices[i].
 * (The struct is opaque in nvml.h; the member only gives it a size.) */
struct nvmlDevice_st {
    unsigned char unused;
};
static struct nvmlDevice_st g_devices[SIM_MAX_GPUS];

/* Trims leading and trailing whitespace in place; returns the new start. */
static char *trim(char *s)
{
    char *end;
    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

static void clear_entries_locked(void)
{
    size_t i;
    for (i = 0; i < g_nentries; i++) {
        free(g_entries[i].key);
        free(g_entries[i].value);
    }
    g_nentries = 0;
    free(g_slots);
    g_slots = NULL;
    g_nslots = 0;
}

static size_t hash_key(const char *key)
{
    size_t h = 1469598103934665603ULL & (size_t)-1; /* FNV-1a */
    while (*key)
        h = (h ^ (unsigned char)*key++) * (size_t)1099511628211ULL;
    return h;
}

/* Builds g_slots over g_entries; later entries replace earlier ones. */
static void index_entries_locked(void)
{
    size_t i, n = 64, slot;
    while (n < 2 * g_nentries)
        n *= 2;
    g_slots = calloc(n, sizeof *g_slots);
    if (g_slots == NULL)
        return; /* lookups fall back to the linear scan */
    g_nslots = n;
    for (i = 0; i < g_nentries; i++) {
        slot = hash_key(g_entries[i].key) & (n - 1);
        while (g_slots[slot] != 0 && strcmp(g_entries[g_slots[slot] - 1].key, g_entries[i].key) != 0)
            slot = (slot + 1) & (n - 1);
        g_slots[slot] = i + 1;
    }
}

/* The entry for `key` (last occurrence), or NULL.  Caller holds g_lock. */
static const sim_entry_t *find_entry_locked(const char *key)
{
    size_t i, slot;
    if (g_slots == NULL) {
        for (i = g_nentries; i-- > 0;)
            if (strcmp(g_entries[i].key, key) == 0)
                return &g_entries[i];
        return NULL;
    }
    slot = hash_key(key) & (g_nslots - 1);
    while (g_slots[slot] != 0) {
        if (strcmp(g_entries[g_slots[slot] - 1].key, key) == 0)
            return &g_entries[g_slots[slot] - 1];
        slot = (slot + 1) & (g_nslots - 1);
    }
    return NULL;
}

static void add_entry_locked(const char *key, const char *value)
{
    char *k = strdup(key), *v = strdup(value);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return;
    }
    if (g_nentries == g_capacity) {
        size_t cap = g_capacity ? g_capacity * 2 : 64;
        sim_entry_t *grown = realloc(g_entries, cap * sizeof(*grown));
        if (grown == NULL) {
            free(k);
            free(v);
            return;
        }
        g_entries = grown;
        g_capacity = cap;
    }
    g_entries[g_nentries].key = k;
    g_entries[g_nentries].value = v;
    g_nentries++;
}

/* (Re)reads the state file named by $JUEYING_NVMLSIM_STATE.  Caller holds g_lock. */
static void load_state_locked(void)
{
    const char *path = getenv(SIM_STATE_ENV);
    FILE *f;
    char *line = NULL;
    size_t cap = 0;

    clear_entries_locked();
    memset(&g_loaded, 0, sizeof g_loaded);
    clock_gettime(CLOCK_MONOTONIC, &g_checked);
    if (path == NULL || *path == '\0' || (f = fopen(path, "r")) == NULL)
        return; /* built-in defaults */
    if (fstat(fileno(f), &g_loaded) != 0)
        memset(&g_loaded, 0, sizeof g_loaded);
    while (getline(&line, &cap, f) != -1) {
        char *s = trim(line), *eq;
        if (*s == '\0' || *s == '#')
            continue;
        eq = strchr(s, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        add_entry_locked(trim(s), trim(eq + 1));
    }
    free(line);
    fclose(f);
    index_entries_locked();
}

/* Reloads the state file if it was replaced or changed since it was loaded,
 * looking at most every 50 ms.  Caller holds g_lock. */
static void reload_if_changed_locked(void)
{
    const char *path = getenv(SIM_STATE_ENV);
    struct timespec now;
    struct stat st;
    long elapsed_ms;

    if (g_init_refs == 0 || path == NULL || *path == '\0')
        return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    elapsed_ms = (now.tv_sec - g_checked.tv_sec) * 1000L + (now.tv_nsec - g_checked.tv_nsec) / 1000000L;
    if (elapsed_ms < 50)
        return;
    g_checked = now;
    if (stat(path, &st) != 0)
        memset(&st, 0, sizeof st);
    if (st.st_ino != g_loaded.st_ino || st.st_dev != g_loaded.st_dev || st.st_size != g_loaded.st_size ||
        st.st_mtim.tv_sec != g_loaded.st_mtim.tv_sec || st.st_mtim.tv_nsec != g_loaded.st_mtim.tv_nsec)
        load_state_locked();
}

/* Copies the value of `key` from the state file into `out`; 0 if absent.
 * The last occurrence wins. */
static int lookup(const char *key, char *out, size_t n)
{
    const sim_entry_t *entry;
    int found = 0;
    pthread_mutex_lock(&g_lock);
    reload_if_changed_locked();
    entry = find_entry_locked(key);
    if (entry != NULL) {
        snprintf(out, n, "%s", entry->value);
        found = 1;
    }
    pthread_mutex_unlock(&g_lock);
    return found;
}

/* Like lookup() but returns a malloc'd copy of any length (NULL if absent). */
static char *lookup_dup(const char *key)
{
    const sim_entry_t *entry;
    char *copy = NULL;
    pthread_mutex_lock(&g_lock);
    reload_if_changed_locked();
    entry = find_entry_locked(key);
    if (entry != NULL)
        copy = strdup(entry->value);
    pthread_mutex_unlock(&g_lock);
    return copy;
}

static const char *find_default(const sim_pair_t *table, size_t n, const char *key)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (strcmp(table[i].key, key) == 0)
            return table[i].value;
    return "";
}

/* Parses a decimal or 0x-hexadecimal unsigned integer; 0 on malformed input. */
static int parse_u64(const char *s, unsigned long long *out)
{
    char *end;
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!isxdigit((unsigned char)*s))
        return 0;
    *out = strtoull(s, &end, base);
    return *end == '\0';
}

static void global_str(const char *key, char *out, size_t n)
{
    if (!lookup(key, out, n))
        snprintf(out, n, "%s",
                 find_default(k_global_defaults, sizeof k_global_defaults / sizeof *k_global_defaults, key));
}

static unsigned long long global_u64(const char *key)
{
    char buf[SIM_VALUE_MAX];
    unsigned long long v = 0;
    global_str(key, buf, sizeof buf);
    if (!parse_u64(buf, &v)) /* malformed value: fall back to the default */
        parse_u64(find_default(k_global_defaults, sizeof k_global_defaults / sizeof *k_global_defaults, key),
                  &v);
    return v;
}

static void gpu_default(unsigned idx, const char *field, char *out, size_t n)
{
    if (!gpu_computed_default(idx, field, out, n))
        snprintf(out, n, "%s", find_default(k_gpu_defaults, sizeof k_gpu_defaults / sizeof *k_gpu_defaults, field));
}

/* Value of "gpu.<idx>.<field>" from the state file, else the default. */
static void gpu_str(unsigned idx, const char *field, char *out, size_t n)
{
    char key[256];
    snprintf(key, sizeof key, "gpu.%u.%s", idx, field);
    if (!lookup(key, out, n))
        gpu_default(idx, field, out, n);
}

static unsigned long long gpu_u64(unsigned idx, const char *field)
{
    char buf[SIM_VALUE_MAX];
    unsigned long long v = 0;
    gpu_str(idx, field, buf, sizeof buf);
    if (!parse_u64(buf, &v)) {
        gpu_default(idx, field, buf, sizeof buf);
        parse_u64(buf, &v);
    }
    return v;
}

static unsigned gpu_count(void)
{
    unsigned long long n = global_u64("gpu_count");
    return n > SIM_MAX_GPUS ? SIM_MAX_GPUS : (unsigned)n;
}

/* ------------------------------------------------------------------------ */
/* Return codes.                                                            */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *name;        /* state-file spelling, without NVML_ERROR_ */
    nvmlReturn_t code;
    const char *description; /* what nvmlErrorString returns */
} sim_error_t;

static const sim_error_t k_errors[] = {
    {"SUCCESS", NVML_SUCCESS, "Success"},
    {"UNINITIALIZED", NVML_ERROR_UNINITIALIZED, "Uninitialized"},
    {"INVALID_ARGUMENT", NVML_ERROR_INVALID_ARGUMENT, "Invalid Argument"},
    {"NOT_SUPPORTED", NVML_ERROR_NOT_SUPPORTED, "Not Supported"},
    {"NO_PERMISSION", NVML_ERROR_NO_PERMISSION, "Insufficient Permissions"},
    {"ALREADY_INITIALIZED", NVML_ERROR_ALREADY_INITIALIZED, "Already Initialized"},
    {"NOT_FOUND", NVML_ERROR_NOT_FOUND, "Not Found"},
    {"INSUFFICIENT_SIZE", NVML_ERROR_INSUFFICIENT_SIZE, "Insufficient Size"},
    {"INSUFFICIENT_POWER", NVML_ERROR_INSUFFICIENT_POWER, "Insufficient External Power"},
    {"DRIVER_NOT_LOADED", NVML_ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded"},
    {"TIMEOUT", NVML_ERROR_TIMEOUT, "Timeout"},
    {"IRQ_ISSUE", NVML_ERROR_IRQ_ISSUE, "Interrupt Request Issue"},
    {"LIBRARY_NOT_FOUND", NVML_ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found"},
    {"FUNCTION_NOT_FOUND", NVML_ERROR_FUNCTION_NOT_FOUND, "Function Not Found"},
    {"CORRUPTED_INFOROM", NVML_ERROR_CORRUPTED_INFOROM, "Corrupted infoROM"},
    {"GPU_IS_LOST", NVML_ERROR_GPU_IS_LOST, "GPU is lost"},
    {"RESET_REQUIRED", NVML_ERROR_RESET_REQUIRED, "GPU requires restart"},
    {"OPERATING_SYSTEM", NVML_ERROR_OPERATING_SYSTEM, "The operating system has blocked the request."},
    {"LIB_RM_VERSION_MISMATCH", NVML_ERROR_LIB_RM_VERSION_MISMATCH,
     "RM has detected an NVML/RM version mismatch."},
    {"IN_USE", NVML_ERROR_IN_USE, "In use by another client"},
    {"MEMORY", NVML_ERROR_MEMORY, "Insufficient Memory"},
    {"NO_DATA", NVML_ERROR_NO_DATA, "No data"},
    {"VGPU_ECC_NOT_SUPPORTED", NVML_ERROR_VGPU_ECC_NOT_SUPPORTED,
     "The requested vgpu operation is not available on target device, because ECC is enabled"},
    {"INSUFFICIENT_RESOURCES", NVML_ERROR_INSUFFICIENT_RESOURCES, "Insufficient resources"},
    {"FREQ_NOT_SUPPORTED", NVML_ERROR_FREQ_NOT_SUPPORTED, "Frequency not supported"},
    {"ARGUMENT_VERSION_MISMATCH", NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "Argument version mismatch"},
    {"DEPRECATED", NVML_ERROR_DEPRECATED, "Deprecated"},
    {"NOT_READY", NVML_ERROR_NOT_READY, "Not ready"},
    {"GPU_NOT_FOUND", NVML_ERROR_GPU_NOT_FOUND, "GPU not found"},
    {"INVALID_STATE", NVML_ERROR_INVALID_STATE, "Invalid state"},
    {"RESET_TYPE_NOT_SUPPORTED", NVML_ERROR_RESET_TYPE_NOT_SUPPORTED, "Reset type not supported"},
    {"UNKNOWN", NVML_ERROR_UNKNOWN, "Unknown Error"},
};
#define SIM_NERRORS (sizeof k_errors / sizeof *k_errors)

/* "GPU_IS_LOST", "NVML_ERROR_GPU_IS_LOST", "gpu_is_lost" or "15" -> 15.
 * Anything unrecognised maps to NVML_ERROR_UNKNOWN. */
static nvmlReturn_t parse_error(const char *s)
{
    unsigned long long num;
    size_t i;
    if (strncmp(s, "NVML_ERROR_", 11) == 0)
        s += 11;
    else if (strncmp(s, "NVML_", 5) == 0)
        s += 5;
    if (parse_u64(s, &num))
        return (nvmlReturn_t)num;
    for (i = 0; i < SIM_NERRORS; i++) {
        const char *a = k_errors[i].name, *b = s;
        while (*a && toupper((unsigned char)*b) == *a) {
            a++;
            b++;
        }
        if (*a == '\0' && *b == '\0')
            return k_errors[i].code;
    }
    return NVML_ERROR_UNKNOWN;
}

/* ------------------------------------------------------------------------ */
/* Entry-point prologues: init check, handle check, lost GPU, injected faults */
/* ------------------------------------------------------------------------ */

static int is_initialized(void)
{
    int yes;
    pthread_mutex_lock(&g_lock);
    yes = g_init_refs > 0;
    pthread_mutex_unlock(&g_lock);
    return yes;
}

/* fail.<fn> / gpu.<idx>.fail.<fn> from the state file; idx < 0: system call. */
static nvmlReturn_t injected_failure(const char *fn, int idx)
{
    char key[256], value[SIM_VALUE_MAX];
    if (idx >= 0) {
        snprintf(key, sizeof key, "gpu.%d.fail.%s", idx, fn);
        if (lookup(key, value, sizeof value))
            return parse_error(value);
    }
    snprintf(key, sizeof key, "fail.%s", fn);
    if (lookup(key, value, sizeof value))
        return parse_error(value);
    return NVML_SUCCESS;
}

/* The checks every call on GPU `idx` goes through. */
static nvmlReturn_t gpu_gate(const char *fn, unsigned idx)
{
    if (gpu_u64(idx, "lost"))
        return NVML_ERROR_GPU_IS_LOST;
    return injected_failure(fn, (int)idx);
}

static nvmlReturn_t enter_system(const char *fn)
{
    if (!is_initialized())
        return NVML_ERROR_UNINITIALIZED;
    return injected_failure(fn, -1);
}

static nvmlReturn_t enter_device(const char *fn, nvmlDevice_t device, unsigned *idx)
{
    uintptr_t p = (uintptr_t)device, base = (uintptr_t)g_devices;
    if (!is_initialized())
        return NVML_ERROR_UNINITIALIZED;
    /* A handle is only valid if it points at one of g_devices. */
    if (p < base || p >= base + sizeof g_devices || (p - base) % sizeof g_devices[0] != 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    *idx = (unsigned)((p - base) / sizeof g_devices[0]);
    if (*idx >= gpu_count())
        return NVML_ERROR_INVALID_ARGUMENT;
    return gpu_gate(fn, *idx);
}

/* Returns early unless a system-level call may proceed. */
#define SYSTEM_PROLOGUE()                                \
    do {                                                 \
        nvmlReturn_t rc_ = enter_system(__func__);       \
        if (rc_ != NVML_SUCCESS)                         \
            return rc_;                                  \
    } while (0)

/* Declares `idx` and returns early unless the call on `device` may proceed. */
#define DEVICE_PROLOGUE(device, idx)                          \
    unsigned idx = 0;                                         \
    do {                                                      \
        nvmlReturn_t rc_ = enter_device(__func__, device, &idx); \
        if (rc_ != NVML_SUCCESS)                              \
            return rc_;                                       \
    } while (0)

/* An entry point `name(device, type *out)` reporting one numeric per-GPU field. */
#define FIELD_GETTER(name, type, field)                  \
    nvmlReturn_t name(nvmlDevice_t device, type *out)    \
    {                                                    \
        DEVICE_PROLOGUE(device, idx);                    \
        if (out == NULL)                                 \
            return NVML_ERROR_INVALID_ARGUMENT;          \
        *out = (type)gpu_u64(idx, field);                \
        return NVML_SUCCESS;                             \
    }

/* An entry point `name(device, type *out)` reporting a constant. */
#define CONST_GETTER(name, type, value)                  \
    nvmlReturn_t name(nvmlDevice_t device, type *out)    \
    {                                                    \
        DEVICE_PROLOGUE(device, idx);                    \
        (void)idx;                                       \
        if (out == NULL)                                 \
            return NVML_ERROR_INVALID_ARGUMENT;          \
        *out = (type)(value);                            \
        return NVML_SUCCESS;                             \
    }

/* An entry point `name(device, char *buf, unsigned length)` reporting a string field. */
#define STRING_GETTER(name, field)                                       \
    nvmlReturn_t name(nvmlDevice_t device, char *buf, unsigned int length) \
    {                                                                    \
        char value_[SIM_VALUE_MAX];                                      \
        DEVICE_PROLOGUE(device, idx);                                    \
        gpu_str(idx, field, value_, sizeof value_);                      \
        return copy_string(buf, length, value_);                         \
    }

/* An entry point `name(device, type *a, type *b)` reporting two per-GPU fields. */
#define PAIR_GETTER(name, type, field_a, field_b)                  \
    nvmlReturn_t name(nvmlDevice_t device, type *a, type *b)       \
    {                                                              \
        DEVICE_PROLOGUE(device, idx);                              \
        if (a == NULL || b == NULL)                                \
            return NVML_ERROR_INVALID_ARGUMENT;                    \
        *a = (type)gpu_u64(idx, field_a);                          \
        *b = (type)gpu_u64(idx, field_b);                          \
        return NVML_SUCCESS;                                       \
    }

static nvmlReturn_t copy_string(char *buf, unsigned int length, const char *value)
{
    size_t len = strlen(value);
    if (buf == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (len + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buf, value, len + 1);
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* Init, shutdown, errors.                                                  */
/* ------------------------------------------------------------------------ */

/* Re-reads the state file and answers the simulated driver's `init` outcome
 * (then fail.<fn>, so fail.nvmlInitWithFlags also works). */
static nvmlReturn_t sim_init(const char *fn)
{
    nvmlReturn_t rc;
    char value[SIM_VALUE_MAX];

    pthread_mutex_lock(&g_lock);
    load_state_locked();
    pthread_mutex_unlock(&g_lock);

    global_str("init", value, sizeof value);
    rc = parse_error(value);
    if (rc == NVML_SUCCESS)
        rc = injected_failure(fn, -1); /* e.g. fail.nvmlInitWithFlags */
    if (rc == NVML_SUCCESS) {
        pthread_mutex_lock(&g_lock);
        g_init_refs++;
        pthread_mutex_unlock(&g_lock);
    }
    return rc;
}

#ifndef NVMLSIM_OMIT_nvmlInitWithFlags
nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    (void)flags;
    return sim_init(__func__);
}
#endif

#ifndef NVMLSIM_OMIT_nvmlInit_v2
nvmlReturn_t nvmlInit_v2(void)
{
    return sim_init(__func__);
}
#endif

#ifndef NVMLSIM_OMIT_nvmlInit
nvmlReturn_t nvmlInit(void)
{
    return sim_init(__func__);
}
#endif

#ifndef NVMLSIM_OMIT_nvmlShutdown
nvmlReturn_t nvmlShutdown(void)
{
    nvmlReturn_t rc = NVML_SUCCESS;
    pthread_mutex_lock(&g_lock);
    if (g_init_refs == 0)
        rc = NVML_ERROR_UNINITIALIZED;
    else
        g_init_refs--;
    pthread_mutex_unlock(&g_lock);
    return rc;
}
#endif

#ifndef NVMLSIM_OMIT_nvmlErrorString
const char *nvmlErrorString(nvmlReturn_t result)
{
    size_t i;
    for (i = 0; i < SIM_NERRORS; i++)
        if (k_errors[i].code == result)
            return k_errors[i].description;
    return "Unknown Error";
}
#endif

/* ------------------------------------------------------------------------ */
/* System queries.                                                          */
/* ------------------------------------------------------------------------ */

#ifndef NVMLSIM_OMIT_nvmlSystemGetDriverVersion
nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    char value[SIM_VALUE_MAX];
    SYSTEM_PROLOGUE();
    global_str("driver_version", value, sizeof value);
    return copy_string(version, length, value);
}
#endif

#ifndef NVMLSIM_OMIT_nvmlSystemGetNVMLVersion
nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    char value[SIM_VALUE_MAX];
    SYSTEM_PROLOGUE();
    global_str("nvml_version", value, sizeof value);
    return copy_string(version, length, value);
}
#endif

static nvmlReturn_t cuda_driver_version(const char *fn, int *out)
{
    nvmlReturn_t rc = enter_system(fn);
    if (rc != NVML_SUCCESS)
        return rc;
    if (out == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *out = (int)global_u64("cuda_driver_version");
    return NVML_SUCCESS;
}

#ifndef NVMLSIM_OMIT_nvmlSystemGetCudaDriverVersion
nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion)
{
    return cuda_driver_version(__func__, cudaDriverVersion);
}
#endif

#ifndef NVMLSIM_OMIT_nvmlSystemGetCudaDriverVersion_v2
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion)
{
    return cuda_driver_version(__func__, cudaDriverVersion);
}
#endif

/* ------------------------------------------------------------------------ */
/* Simulated processes: "pid:used_bytes[:name]" entries, comma separated.   */
/* ------------------------------------------------------------------------ */

typedef struct {
    unsigned pid;
    unsigned long long used_bytes;
    char name[256];
} sim_process_t;

/* Parses gpu.<idx>.processes into a malloc'd array (*count entries, may be NULL). */
static sim_process_t *load_processes(unsigned idx, unsigned *count)
{
    char key[64], *list, *item, *save = NULL;
    sim_process_t *procs = NULL;
    unsigned n = 0, cap = 0;

    *count = 0;
    snprintf(key, sizeof key, "gpu.%u.processes", idx);
    list = lookup_dup(key);
    if (list == NULL)
        return NULL;
    for (item = strtok_r(list, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
        char *pid_s = trim(item), *used_s, *name_s;
        unsigned long long pid, used;
        used_s = strchr(pid_s, ':');
        if (used_s == NULL)
            continue;
        *used_s++ = '\0';
        name_s = strchr(used_s, ':');
        if (name_s != NULL)
            *name_s++ = '\0';
        if (!parse_u64(trim(pid_s), &pid) || !parse_u64(trim(used_s), &used))
            continue;
        if (n == cap) {
            sim_process_t *grown;
            cap = cap ? cap * 2 : 8;
            grown = realloc(procs, cap * sizeof(*grown));
            if (grown == NULL)
                break;
            procs = grown;
        }
        procs[n].pid = (unsigned)pid;
        procs[n].used_bytes = used;
        snprintf(procs[n].name, sizeof procs[n].name, "%s", name_s ? trim(name_s) : "");
        n++;
    }
    free(list);
    *count = n;
    return procs;
}

#ifndef NVMLSIM_OMIT_nvmlSystemGetProcessName
/* The name from a GPU's process list if it has one, else the host's /proc. */
nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length)
{
    char found[256] = "", path[64];
    unsigned gpu, i, n;
    FILE *f;
    SYSTEM_PROLOGUE();
    for (gpu = 0; gpu < gpu_count() && found[0] == '\0'; gpu++) {
        sim_process_t *procs = load_processes(gpu, &n);
        for (i = 0; i < n; i++)
            if (procs[i].pid == pid && procs[i].name[0] != '\0')
                snprintf(found, sizeof found, "%s", procs[i].name);
        free(procs);
    }
    if (found[0] == '\0') {
        snprintf(path, sizeof path, "/proc/%u/comm", pid);
        f = fopen(path, "r");
        if (f == NULL)
            return NVML_ERROR_NOT_FOUND;
        if (fgets(found, sizeof found, f) == NULL)
            found[0] = '\0';
        fclose(f);
        trim(found); /* drops the trailing newline */
    }
    return copy_string(name, length, found);
}
#endif

/* ------------------------------------------------------------------------ */
/* Device enumeration and handles.                                          */
/* ------------------------------------------------------------------------ */

static nvmlReturn_t device_count(const char *fn, unsigned int *count)
{
    nvmlReturn_t rc = enter_system(fn);
    if (rc != NVML_SUCCESS)
        return rc;
    if (count == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *count = gpu_count();
    return NVML_SUCCESS;
}

#ifndef NVMLSIM_OMIT_nvmlDeviceGetCount_v2
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    return device_count(__func__, deviceCount);
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetCount
nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount)
{
    return device_count(__func__, deviceCount);
}
#endif

/* Hands out the handle of GPU `idx` after the usual per-GPU checks. */
static nvmlReturn_t handle_for(const char *fn, unsigned idx, nvmlDevice_t *device)
{
    nvmlReturn_t rc;
    if (device == NULL || idx >= gpu_count())
        return NVML_ERROR_INVALID_ARGUMENT;
    rc = gpu_gate(fn, idx);
    if (rc == NVML_SUCCESS)
        *device = &g_devices[idx];
    return rc;
}

static nvmlReturn_t handle_by_index(const char *fn, unsigned int index, nvmlDevice_t *device)
{
    nvmlReturn_t rc = enter_system(fn);
    if (rc != NVML_SUCCESS)
        return rc;
    return handle_for(fn, index, device);
}

#ifndef NVMLSIM_OMIT_nvmlDeviceGetHandleByIndex_v2
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    return handle_by_index(__func__, index, device);
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetHandleByIndex
nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return handle_by_index(__func__, index, device);
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetHandleByUUID
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    char value[SIM_VALUE_MAX];
    unsigned i;
    SYSTEM_PROLOGUE();
    if (uuid == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (i = 0; i < gpu_count(); i++) {
        gpu_str(i, "uuid", value, sizeof value);
        if (strcmp(value, uuid) == 0)
            return handle_for(__func__, i, device);
    }
    return NVML_ERROR_NOT_FOUND;
}
#endif

/* Parses "[domain:]bus:device.function" (hex) as NVML accepts it. */
static int parse_bus_id(const char *s, unsigned *domain, unsigned *bus, unsigned *dev, unsigned *fn)
{
    *domain = 0;
    *fn = 0;
    if (sscanf(s, "%x:%x:%x.%x", domain, bus, dev, fn) == 4)
        return 1;
    *domain = 0;
    return sscanf(s, "%x:%x.%x", bus, dev, fn) == 3;
}

static nvmlReturn_t handle_by_bus_id(const char *fn, const char *bus_id, nvmlDevice_t *device)
{
    char value[SIM_VALUE_MAX];
    unsigned i, d1, b1, v1, f1, d2, b2, v2, f2;
    nvmlReturn_t rc = enter_system(fn);
    if (rc != NVML_SUCCESS)
        return rc;
    if (bus_id == NULL || !parse_bus_id(bus_id, &d1, &b1, &v1, &f1))
        return NVML_ERROR_INVALID_ARGUMENT;
    for (i = 0; i < gpu_count(); i++) {
        gpu_str(i, "pci_bus_id", value, sizeof value);
        if (parse_bus_id(value, &d2, &b2, &v2, &f2) && d1 == d2 && b1 == b2 && v1 == v2 && f1 == f2)
            return handle_for(fn, i, device);
    }
    return NVML_ERROR_NOT_FOUND;
}

#ifndef NVMLSIM_OMIT_nvmlDeviceGetHandleByPciBusId_v2
nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device)
{
    return handle_by_bus_id(__func__, pciBusId, device);
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetHandleByPciBusId
nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device)
{
    return handle_by_bus_id(__func__, pciBusId, device);
}
#endif

/* ------------------------------------------------------------------------ */
/* Identity.                                                                */
/* ------------------------------------------------------------------------ */

#ifndef NVMLSIM_OMIT_nvmlDeviceGetName
STRING_GETTER(nvmlDeviceGetName, "name")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetUUID
STRING_GETTER(nvmlDeviceGetUUID, "uuid")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetSerial
STRING_GETTER(nvmlDeviceGetSerial, "serial")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetVbiosVersion
STRING_GETTER(nvmlDeviceGetVbiosVersion, "vbios_version")
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetIndex
CONST_GETTER(nvmlDeviceGetIndex, unsigned int, idx)
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetMinorNumber
CONST_GETTER(nvmlDeviceGetMinorNumber, unsigned int, idx) /* /dev/nvidia<idx> */
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetBrand
FIELD_GETTER(nvmlDeviceGetBrand, nvmlBrandType_t, "brand")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetArchitecture
FIELD_GETTER(nvmlDeviceGetArchitecture, nvmlDeviceArchitecture_t, "architecture")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceIsMigDeviceHandle
CONST_GETTER(nvmlDeviceIsMigDeviceHandle, unsigned int, 0) /* only physical GPU handles exist */
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetDisplayMode
CONST_GETTER(nvmlDeviceGetDisplayMode, nvmlEnableState_t, NVML_FEATURE_DISABLED)
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetDisplayActive
CONST_GETTER(nvmlDeviceGetDisplayActive, nvmlEnableState_t, NVML_FEATURE_DISABLED)
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetDriverModel_v2
/* WDDM/TCC driver models exist only on Windows. */
nvmlReturn_t nvmlDeviceGetDriverModel_v2(nvmlDevice_t device, nvmlDriverModel_t *current, nvmlDriverModel_t *pending)
{
    DEVICE_PROLOGUE(device, idx);
    (void)idx;
    (void)current;
    (void)pending;
    return NVML_ERROR_NOT_SUPPORTED;
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetDriverModel
nvmlReturn_t nvmlDeviceGetDriverModel(nvmlDevice_t device, nvmlDriverModel_t *current, nvmlDriverModel_t *pending)
{
    DEVICE_PROLOGUE(device, idx);
    (void)idx;
    (void)current;
    (void)pending;
    return NVML_ERROR_NOT_SUPPORTED;
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetCudaComputeCapability
nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor)
{
    DEVICE_PROLOGUE(device, idx);
    (void)idx;
    if (major == NULL || minor == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *major = 9; /* Hopper, sm_90 */
    *minor = 0;
    return NVML_SUCCESS;
}
#endif

#define SIM_PCI_DEVICE_ID 0x233010DEu    /* 10de:2330, H100 SXM5 80GB */
#define SIM_PCI_SUBSYSTEM_ID 0x16C110DEu

/* domain/bus/device numbers of GPU `idx`; busId is normalised to NVML's format. */
static void gpu_pci(unsigned idx, unsigned *domain, unsigned *bus, unsigned *dev)
{
    char value[SIM_VALUE_MAX];
    unsigned fn;
    gpu_str(idx, "pci_bus_id", value, sizeof value);
    if (!parse_bus_id(value, domain, bus, dev, &fn)) {
        gpu_default(idx, "pci_bus_id", value, sizeof value);
        parse_bus_id(value, domain, bus, dev, &fn);
    }
}

#ifndef NVMLSIM_OMIT_nvmlDeviceGetPciInfo_v3
nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    DEVICE_PROLOGUE(device, idx);
    if (pci == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    gpu_pci(idx, &pci->domain, &pci->bus, &pci->device);
    pci->pciDeviceId = SIM_PCI_DEVICE_ID;
    pci->pciSubSystemId = SIM_PCI_SUBSYSTEM_ID;
    snprintf(pci->busId, sizeof pci->busId, NVML_DEVICE_PCI_BUS_ID_FMT, NVML_DEVICE_PCI_BUS_ID_FMT_ARGS(pci));
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, NVML_DEVICE_PCI_BUS_ID_LEGACY_FMT,
             pci->domain & 0xFFFFu, pci->bus & 0xFFu, pci->device & 0xFFu);
    return NVML_SUCCESS;
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetPciInfoExt
nvmlReturn_t nvmlDeviceGetPciInfoExt(nvmlDevice_t device, nvmlPciInfoExt_t *pci)
{
    DEVICE_PROLOGUE(device, idx);
    if (pci == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (pci->version != nvmlPciInfoExt_v1)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    gpu_pci(idx, &pci->domain, &pci->bus, &pci->device);
    pci->pciDeviceId = SIM_PCI_DEVICE_ID;
    pci->pciSubSystemId = SIM_PCI_SUBSYSTEM_ID;
    pci->baseClass = 0x03; /* display controller */
    pci->subClass = 0x02;  /* 3D controller */
    snprintf(pci->busId, sizeof pci->busId, NVML_DEVICE_PCI_BUS_ID_FMT, NVML_DEVICE_PCI_BUS_ID_FMT_ARGS(pci));
    return NVML_SUCCESS;
}
#endif

/* ------------------------------------------------------------------------ */
/* Memory and utilisation.                                                  */
/* ------------------------------------------------------------------------ */

/* memory_used_bytes is the v1 "used" (reserved + allocated, clamped to total);
 * free = total - used in both versions; v2 reports min(memory_reserved_bytes,
 * used) as reserved and the rest of `used` as used. */
static void gpu_memory(unsigned idx, unsigned long long *total, unsigned long long *used,
                       unsigned long long *reserved)
{
    *total = gpu_u64(idx, "memory_total_bytes");
    *used = gpu_u64(idx, "memory_used_bytes");
    *reserved = gpu_u64(idx, "memory_reserved_bytes");
    if (*used > *total)
        *used = *total;
    if (*reserved > *used)
        *reserved = *used;
}

#ifndef NVMLSIM_OMIT_nvmlDeviceGetMemoryInfo
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    unsigned long long total, used, reserved;
    DEVICE_PROLOGUE(device, idx);
    if (memory == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    gpu_memory(idx, &total, &used, &reserved);
    memory->total = total;
    memory->used = used;
    memory->free = total - used;
    return NVML_SUCCESS;
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetMemoryInfo_v2
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    unsigned long long total, used, reserved;
    DEVICE_PROLOGUE(device, idx);
    if (memory == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != nvmlMemory_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    gpu_memory(idx, &total, &used, &reserved);
    memory->total = total;
    memory->reserved = reserved;
    memory->used = used - reserved;
    memory->free = total - used;
    return NVML_SUCCESS;
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetBAR1MemoryInfo
nvmlReturn_t nvmlDeviceGetBAR1MemoryInfo(nvmlDevice_t device, nvmlBAR1Memory_t *bar1Memory)
{
    DEVICE_PROLOGUE(device, idx);
    (void)idx;
    if (bar1Memory == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    bar1Memory->bar1Total = 128ULL << 30; /* 128 GiB BAR1 on H100 */
    bar1Memory->bar1Used = 4ULL << 20;
    bar1Memory->bar1Free = bar1Memory->bar1Total - bar1Memory->bar1Used;
    return NVML_SUCCESS;
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetUtilizationRates
nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization)
{
    DEVICE_PROLOGUE(device, idx);
    if (utilization == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    utilization->gpu = (unsigned)gpu_u64(idx, "utilization_gpu_pct");
    utilization->memory = (unsigned)gpu_u64(idx, "utilization_memory_pct");
    return NVML_SUCCESS;
}
#endif

/* Video engines are idle: 0 % over a 167 ms sampling period. */
#define IDLE_ENGINE_GETTER(name)                                                                   \
    nvmlReturn_t name(nvmlDevice_t device, unsigned int *utilization, unsigned int *samplingPeriodUs) \
    {                                                                                              \
        DEVICE_PROLOGUE(device, idx);                                                              \
        (void)idx;                                                                                 \
        if (utilization == NULL || samplingPeriodUs == NULL)                                       \
            return NVML_ERROR_INVALID_ARGUMENT;                                                    \
        *utilization = 0;                                                                          \
        *samplingPeriodUs = 167000;                                                                \
        return NVML_SUCCESS;                                                                       \
    }

#ifndef NVMLSIM_OMIT_nvmlDeviceGetEncoderUtilization
IDLE_ENGINE_GETTER(nvmlDeviceGetEncoderUtilization)
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetDecoderUtilization
IDLE_ENGINE_GETTER(nvmlDeviceGetDecoderUtilization)
#endif

/* ------------------------------------------------------------------------ */
/* Thermals, fans, power, clocks.                                           */
/* ------------------------------------------------------------------------ */

#ifndef NVMLSIM_OMIT_nvmlDeviceGetTemperature
nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensorType, unsigned int *temp)
{
    DEVICE_PROLOGUE(device, idx);
    if (temp == NULL || sensorType != NVML_TEMPERATURE_GPU)
        return NVML_ERROR_INVALID_ARGUMENT;
    *temp = (unsigned)gpu_u64(idx, "temperature_c");
    return NVML_SUCCESS;
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetTemperatureV
nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_t *temperature)
{
    DEVICE_PROLOGUE(device, idx);
    if (temperature == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (temperature->version != nvmlTemperature_v1)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (temperature->sensorType != NVML_TEMPERATURE_GPU)
        return NVML_ERROR_INVALID_ARGUMENT;
    temperature->temperature = (int)gpu_u64(idx, "temperature_c");
    return NVML_SUCCESS;
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetTemperatureThreshold
nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t device, nvmlTemperatureThresholds_t thresholdType,
                                               unsigned int *temp)
{
    const char *field;
    DEVICE_PROLOGUE(device, idx);
    if (temp == NULL || thresholdType >= NVML_TEMPERATURE_THRESHOLD_COUNT)
        return NVML_ERROR_INVALID_ARGUMENT;
    switch (thresholdType) {
    case NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: field = "temperature_shutdown_c"; break;
    case NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: field = "temperature_slowdown_c"; break;
    case NVML_TEMPERATURE_THRESHOLD_MEM_MAX: field = "temperature_mem_max_c"; break;
    case NVML_TEMPERATURE_THRESHOLD_GPU_MAX: field = "temperature_max_gpu_c"; break;
    default: return NVML_ERROR_NOT_SUPPORTED; /* acoustic/GPS thresholds */
    }
    *temp = (unsigned)gpu_u64(idx, field);
    return NVML_SUCCESS;
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetFanSpeed
/* SXM modules have no fans of their own. */
nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed)
{
    DEVICE_PROLOGUE(device, idx);
    (void)idx;
    (void)speed;
    return NVML_ERROR_NOT_SUPPORTED;
}
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetNumFans
CONST_GETTER(nvmlDeviceGetNumFans, unsigned int, 0)
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetPowerUsage
FIELD_GETTER(nvmlDeviceGetPowerUsage, unsigned int, "power_mw")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetEnforcedPowerLimit
FIELD_GETTER(nvmlDeviceGetEnforcedPowerLimit, unsigned int, "power_limit_mw")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetPowerManagementLimit
FIELD_GETTER(nvmlDeviceGetPowerManagementLimit, unsigned int, "power_limit_mw")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetTotalEnergyConsumption
FIELD_GETTER(nvmlDeviceGetTotalEnergyConsumption, unsigned long long, "energy_mj")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetPowerManagementDefaultLimit
FIELD_GETTER(nvmlDeviceGetPowerManagementDefaultLimit, unsigned int, "power_default_limit_mw")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetPowerManagementLimitConstraints
PAIR_GETTER(nvmlDeviceGetPowerManagementLimitConstraints, unsigned int, "power_min_limit_mw", "power_max_limit_mw")
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetPerformanceState
FIELD_GETTER(nvmlDeviceGetPerformanceState, nvmlPstates_t, "pstate")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetPowerState
FIELD_GETTER(nvmlDeviceGetPowerState, nvmlPstates_t, "pstate")
#endif

/* Field holding the current (or maximum) clock of a clock domain; NULL if unknown. */
static const char *clock_field(nvmlClockType_t type, int max)
{
    switch (type) {
    case NVML_CLOCK_GRAPHICS: /* graphics and SM clocks are the same on H100 */
    case NVML_CLOCK_SM: return max ? "clock_sm_max_mhz" : "clock_sm_mhz";
    case NVML_CLOCK_MEM: return max ? "clock_mem_max_mhz" : "clock_mem_mhz";
    case NVML_CLOCK_VIDEO: return max ? "clock_video_max_mhz" : "clock_video_mhz";
    default: return NULL;
    }
}

#define CLOCK_GETTER(name, max)                                                      \
    nvmlReturn_t name(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock) \
    {                                                                                \
        const char *field = clock_field(type, max);                                 \
        DEVICE_PROLOGUE(device, idx);                                                \
        if (clock == NULL || field == NULL)                                          \
            return NVML_ERROR_INVALID_ARGUMENT;                                      \
        *clock = (unsigned)gpu_u64(idx, field);                                      \
        return NVML_SUCCESS;                                                         \
    }

#ifndef NVMLSIM_OMIT_nvmlDeviceGetClockInfo
CLOCK_GETTER(nvmlDeviceGetClockInfo, 0)
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetMaxClockInfo
CLOCK_GETTER(nvmlDeviceGetMaxClockInfo, 1)
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetCurrentClocksEventReasons
FIELD_GETTER(nvmlDeviceGetCurrentClocksEventReasons, unsigned long long, "clocks_event_reasons")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetCurrentClocksThrottleReasons
FIELD_GETTER(nvmlDeviceGetCurrentClocksThrottleReasons, unsigned long long, "clocks_event_reasons")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetSupportedClocksEventReasons
CONST_GETTER(nvmlDeviceGetSupportedClocksEventReasons, unsigned long long, nvmlClocksEventReasonAll)
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetSupportedClocksThrottleReasons
CONST_GETTER(nvmlDeviceGetSupportedClocksThrottleReasons, unsigned long long, nvmlClocksEventReasonAll)
#endif

/* ------------------------------------------------------------------------ */
/* Modes.                                                                   */
/* ------------------------------------------------------------------------ */

#ifndef NVMLSIM_OMIT_nvmlDeviceGetPersistenceMode
FIELD_GETTER(nvmlDeviceGetPersistenceMode, nvmlEnableState_t, "persistence_mode")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetComputeMode
FIELD_GETTER(nvmlDeviceGetComputeMode, nvmlComputeMode_t, "compute_mode")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetEccMode
PAIR_GETTER(nvmlDeviceGetEccMode, nvmlEnableState_t, "ecc_mode_current", "ecc_mode_pending")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetMigMode
PAIR_GETTER(nvmlDeviceGetMigMode, unsigned int, "mig_mode_current", "mig_mode_pending")
#endif

/* ------------------------------------------------------------------------ */
/* Memory health: ECC counters, retired pages, remapped rows.               */
/* ------------------------------------------------------------------------ */

#ifndef NVMLSIM_OMIT_nvmlDeviceGetTotalEccErrors
/* NOT_SUPPORTED while ECC is disabled, as on real hardware. */
nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, nvmlMemoryErrorType_t errorType,
                                         nvmlEccCounterType_t counterType, unsigned long long *eccCounts)
{
    static const char *const fields[2][2] = {
        {"ecc_corrected_volatile", "ecc_corrected_aggregate"},
        {"ecc_uncorrected_volatile", "ecc_uncorrected_aggregate"},
    };
    DEVICE_PROLOGUE(device, idx);
    if (eccCounts == NULL || (unsigned)errorType > 1 || (unsigned)counterType > 1)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!gpu_u64(idx, "ecc_mode_current"))
        return NVML_ERROR_NOT_SUPPORTED;
    *eccCounts = gpu_u64(idx, fields[errorType][counterType]);
    return NVML_SUCCESS;
}
#endif

/* Count/size protocol shared by both RetiredPages versions.  Addresses are
 * fake but distinct: cause in bits 32+, page number in bits 12+. */
static nvmlReturn_t retired_pages(unsigned idx, nvmlPageRetirementCause_t cause, unsigned int *pageCount,
                                  unsigned long long *addresses, unsigned long long *timestamps)
{
    unsigned long long n;
    unsigned i;
    if (pageCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (cause == NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
        n = gpu_u64(idx, "retired_pages_sbe");
    else if (cause == NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
        n = gpu_u64(idx, "retired_pages_dbe");
    else
        return NVML_ERROR_INVALID_ARGUMENT;
    if (addresses == NULL || *pageCount < n) {
        nvmlReturn_t rc = (*pageCount < n) ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
        *pageCount = (unsigned)n;
        return rc;
    }
    for (i = 0; i < n; i++) {
        addresses[i] = ((unsigned long long)(cause + 1) << 32) | ((unsigned long long)(i + 1) << 12);
        if (timestamps != NULL)
            timestamps[i] = 1700000000ULL + 3600ULL * i;
    }
    *pageCount = (unsigned)n;
    return NVML_SUCCESS;
}

#ifndef NVMLSIM_OMIT_nvmlDeviceGetRetiredPages
nvmlReturn_t nvmlDeviceGetRetiredPages(nvmlDevice_t device, nvmlPageRetirementCause_t cause, unsigned int *pageCount,
                                       unsigned long long *addresses)
{
    DEVICE_PROLOGUE(device, idx);
    return retired_pages(idx, cause, pageCount, addresses, NULL);
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetRetiredPages_v2
nvmlReturn_t nvmlDeviceGetRetiredPages_v2(nvmlDevice_t device, nvmlPageRetirementCause_t cause,
                                          unsigned int *pageCount, unsigned long long *addresses,
                                          unsigned long long *timestamps)
{
    DEVICE_PROLOGUE(device, idx);
    return retired_pages(idx, cause, pageCount, addresses, timestamps);
}
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetRetiredPagesPendingStatus
FIELD_GETTER(nvmlDeviceGetRetiredPagesPendingStatus, nvmlEnableState_t, "retired_pages_pending")
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetRemappedRows
nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corrRows, unsigned int *uncRows,
                                       unsigned int *isPending, unsigned int *failureOccurred)
{
    DEVICE_PROLOGUE(device, idx);
    if (corrRows == NULL || uncRows == NULL || isPending == NULL || failureOccurred == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *corrRows = (unsigned)gpu_u64(idx, "remapped_rows_corrected");
    *uncRows = (unsigned)gpu_u64(idx, "remapped_rows_uncorrected");
    *isPending = (unsigned)gpu_u64(idx, "remapped_rows_pending");
    *failureOccurred = (unsigned)gpu_u64(idx, "remapped_rows_failure");
    return NVML_SUCCESS;
}
#endif

/* ------------------------------------------------------------------------ */
/* PCIe and NVLink.                                                         */
/* ------------------------------------------------------------------------ */

#ifndef NVMLSIM_OMIT_nvmlDeviceGetCurrPcieLinkGeneration
FIELD_GETTER(nvmlDeviceGetCurrPcieLinkGeneration, unsigned int, "pcie_gen_current")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetMaxPcieLinkGeneration
FIELD_GETTER(nvmlDeviceGetMaxPcieLinkGeneration, unsigned int, "pcie_gen_max")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetGpuMaxPcieLinkGeneration
FIELD_GETTER(nvmlDeviceGetGpuMaxPcieLinkGeneration, unsigned int, "pcie_gen_max")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetCurrPcieLinkWidth
FIELD_GETTER(nvmlDeviceGetCurrPcieLinkWidth, unsigned int, "pcie_width_current")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetMaxPcieLinkWidth
FIELD_GETTER(nvmlDeviceGetMaxPcieLinkWidth, unsigned int, "pcie_width_max")
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetPcieReplayCounter
FIELD_GETTER(nvmlDeviceGetPcieReplayCounter, unsigned int, "pcie_replay_counter")
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetPcieThroughput
/* An idle bus: 0 KB/s either way. */
nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t device, nvmlPcieUtilCounter_t counter, unsigned int *value)
{
    DEVICE_PROLOGUE(device, idx);
    (void)idx;
    if (value == NULL || (unsigned)counter >= NVML_PCIE_UTIL_COUNT)
        return NVML_ERROR_INVALID_ARGUMENT;
    *value = 0;
    return NVML_SUCCESS;
}
#endif

/* Is `link` in the comma list gpu.<idx>.nvlink_down? */
static int nvlink_is_down(unsigned idx, unsigned link)
{
    char list[SIM_VALUE_MAX], *item, *save = NULL;
    unsigned long long v;
    gpu_str(idx, "nvlink_down", list, sizeof list);
    for (item = strtok_r(list, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
        if (parse_u64(trim(item), &v) && v == link)
            return 1;
    return 0;
}

#ifndef NVMLSIM_OMIT_nvmlDeviceGetNvLinkState
/* Links past the hardware maximum are invalid; links the GPU does not have
 * (all of them on a PCIe-only board, nvlink_count = 0) are not supported. */
nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link, nvmlEnableState_t *isActive)
{
    DEVICE_PROLOGUE(device, idx);
    if (isActive == NULL || link >= NVML_NVLINK_MAX_LINKS)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (link >= gpu_u64(idx, "nvlink_count"))
        return NVML_ERROR_NOT_SUPPORTED;
    *isActive = nvlink_is_down(idx, link) ? NVML_FEATURE_DISABLED : NVML_FEATURE_ENABLED;
    return NVML_SUCCESS;
}
#endif

/* ------------------------------------------------------------------------ */
/* Running processes (count/size protocol).                                 */
/* ------------------------------------------------------------------------ */

/* Fills v1 (pid, usedGpuMemory) or v2/v3 (plus MIG instance ids) records.
 * Only compute processes are simulated; the graphics list is always empty. */
static nvmlReturn_t running_processes(unsigned idx, int compute, int v1, unsigned int *infoCount, void *infos)
{
    sim_process_t *procs = NULL;
    unsigned n = 0, i;
    if (infoCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (compute)
        procs = load_processes(idx, &n);
    if (infos == NULL || *infoCount < n) {
        nvmlReturn_t rc = (n > 0) ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
        *infoCount = n;
        free(procs);
        return rc;
    }
    for (i = 0; i < n; i++) {
        if (v1) {
            nvmlProcessInfo_v1_t *p = (nvmlProcessInfo_v1_t *)infos + i;
            p->pid = procs[i].pid;
            p->usedGpuMemory = procs[i].used_bytes;
        } else {
            nvmlProcessInfo_t *p = (nvmlProcessInfo_t *)infos + i;
            p->pid = procs[i].pid;
            p->usedGpuMemory = procs[i].used_bytes;
            p->gpuInstanceId = 0xFFFFFFFFu; /* not in MIG mode */
            p->computeInstanceId = 0xFFFFFFFFu;
        }
    }
    *infoCount = n;
    free(procs);
    return NVML_SUCCESS;
}

#define PROCESS_GETTER(name, info_type, compute, v1)                                     \
    nvmlReturn_t name(nvmlDevice_t device, unsigned int *infoCount, info_type *infos)   \
    {                                                                                   \
        DEVICE_PROLOGUE(device, idx);                                                   \
        return running_processes(idx, compute, v1, infoCount, infos);                   \
    }

#ifndef NVMLSIM_OMIT_nvmlDeviceGetComputeRunningProcesses_v3
PROCESS_GETTER(nvmlDeviceGetComputeRunningProcesses_v3, nvmlProcessInfo_t, 1, 0)
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetComputeRunningProcesses_v2
PROCESS_GETTER(nvmlDeviceGetComputeRunningProcesses_v2, nvmlProcessInfo_v2_t, 1, 0)
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetComputeRunningProcesses
PROCESS_GETTER(nvmlDeviceGetComputeRunningProcesses, nvmlProcessInfo_v1_t, 1, 1)
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetGraphicsRunningProcesses_v3
PROCESS_GETTER(nvmlDeviceGetGraphicsRunningProcesses_v3, nvmlProcessInfo_t, 0, 0)
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetGraphicsRunningProcesses_v2
PROCESS_GETTER(nvmlDeviceGetGraphicsRunningProcesses_v2, nvmlProcessInfo_v2_t, 0, 0)
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetGraphicsRunningProcesses
PROCESS_GETTER(nvmlDeviceGetGraphicsRunningProcesses, nvmlProcessInfo_v1_t, 0, 1)
#endif
#ifndef NVMLSIM_OMIT_nvmlDeviceGetMPSComputeRunningProcesses_v3
PROCESS_GETTER(nvmlDeviceGetMPSComputeRunningProcesses_v3, nvmlProcessInfo_t, 0, 0)
#endif

#ifndef NVMLSIM_OMIT_nvmlDeviceGetProcessUtilization
/* One fresh sample per simulated compute process; the GPU's utilisation is
 * shared evenly between them.  NOT_FOUND when there are no processes. */
nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device, nvmlProcessUtilizationSample_t *utilization,
                                             unsigned int *processSamplesCount, unsigned long long lastSeenTimeStamp)
{
    sim_process_t *procs;
    unsigned n, i;
    struct timespec now;
    unsigned long long stamp_us;
    DEVICE_PROLOGUE(device, idx);
    (void)lastSeenTimeStamp;
    if (processSamplesCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    procs = load_processes(idx, &n);
    if (n == 0) {
        free(procs);
        return NVML_ERROR_NOT_FOUND;
    }
    if (utilization == NULL || *processSamplesCount < n) {
        *processSamplesCount = n;
        free(procs);
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    stamp_us = (unsigned long long)now.tv_sec * 1000000ULL + (unsigned long long)now.tv_nsec / 1000ULL;
    for (i = 0; i < n; i++) {
        utilization[i].pid = procs[i].pid;
        utilization[i].timeStamp = stamp_us;
        utilization[i].smUtil = (unsigned)(gpu_u64(idx, "utilization_gpu_pct") / n);
        utilization[i].memUtil = (unsigned)(gpu_u64(idx, "utilization_memory_pct") / n);
        utilization[i].encUtil = 0;
        utilization[i].decUtil = 0;
    }
    *processSamplesCount = n;
    free(procs);
    return NVML_SUCCESS;
}
#endif
