/*
 * The engine's eval callback, first half in C: ggml's scheduler asks the callback about every node
 * of the graph (~350 per decode step on an 11-layer model), and a koffi call into JS costs ~0.5 us.
 * This filter answers those questions here, by the tensor's name, and calls into JS only for the
 * residual tensors a decode reads or edits (one per hooked layer).
 *
 * It needs no llama.cpp header: where the name sits in struct ggml_tensor comes from the caller
 * (src/engine/ffi/llama.ts, whose offsets `npm run check:ffi` checks against the pinned headers).
 * Built by `npm run build:hooks` (also part of `npm ci` and `npm run build:llama`); without it the
 * engine asks JS about every node, with the same results.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bump when any signature below changes: the engine refuses a library of another version. */
#define PERSONA_EVAL_FILTER_VERSION 1

typedef bool (*persona_on_tensor)(void *tensor, int32_t layer);

struct persona_eval_filter {
    persona_on_tensor on_tensor;
    int32_t n_names;
    int32_t name_len;
    int32_t name_offset;
    uint8_t *wanted; /* wanted[i]: hook tensors named names[i] in this decode; written by the caller */
    char *names;     /* n_names NUL-padded names of name_len bytes each */
};

int32_t persona_eval_filter_version(void) { return PERSONA_EVAL_FILTER_VERSION; }

/* `names`: n_names × name_len bytes; name i is reported to on_tensor as layer i. */
struct persona_eval_filter *persona_eval_filter_new(const char *names, int32_t n_names, int32_t name_len, int32_t name_offset,
                                                    persona_on_tensor on_tensor) {
    if (n_names <= 0 || name_len <= 0 || name_offset < 0 || names == NULL || on_tensor == NULL) return NULL;
    struct persona_eval_filter *f = calloc(1, sizeof *f);
    if (f == NULL) return NULL;
    f->wanted = calloc((size_t)n_names, 1);
    f->names = malloc((size_t)n_names * (size_t)name_len);
    if (f->wanted == NULL || f->names == NULL) {
        free(f->wanted);
        free(f->names);
        free(f);
        return NULL;
    }
    memcpy(f->names, names, (size_t)n_names * (size_t)name_len);
    f->on_tensor = on_tensor;
    f->n_names = n_names;
    f->name_len = name_len;
    f->name_offset = name_offset;
    return f;
}

void persona_eval_filter_free(struct persona_eval_filter *f) {
    if (f == NULL) return;
    free(f->wanted);
    free(f->names);
    free(f);
}

uint8_t *persona_eval_filter_wanted(struct persona_eval_filter *f) { return f->wanted; }

static int32_t wanted_layer(const struct persona_eval_filter *f, const char *name) {
    for (int32_t i = 0; i < f->n_names; i++) {
        if (f->wanted[i] && strncmp(name, f->names + (size_t)i * (size_t)f->name_len, (size_t)f->name_len) == 0) return i;
    }
    return -1;
}

/* A ggml_backend_sched_eval_callback; user_data is the filter. */
static bool persona_eval_filter_cb(void *tensor, bool ask, void *user_data) {
    struct persona_eval_filter *f = user_data;
    int32_t layer = wanted_layer(f, (const char *)tensor + f->name_offset);
    if (ask) return layer >= 0;
    /* Answered only for nodes this filter asked for; false would stop the graph. */
    return layer < 0 || f->on_tensor(tensor, layer);
}

/* The callback's address, for llama_context_params.cb_eval. */
void *persona_eval_filter_callback(void) { return (void *)persona_eval_filter_cb; }
