/* processor/gateway_auth.c - who may do what: JWT checks (libjwt), the models claim's
 * patterns, and per-user token buckets. Service thread only. */
#include <errno.h>
#include <fnmatch.h>
#include <jwt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/alloc.h"
#include "codec/json.h"
#include "gateway_int.h"
#include "metrics.h"

/* Bounds on the caches: past them, they start over (a token is checked again, a bucket
 * is full again), which costs a little work and never lets anything through. */
#define TOKEN_CACHE_MAX  10000
#define BUCKET_CACHE_MAX 100000
#define KEY_FILE_MAX     (1 << 20)

int gw_auth_setup(processor_gateway_t *gw, char *errstr, size_t errstr_size)
{
    const processor_config_t *cfg = gw->cfg;
    if (cfg->no_auth)
        return 0;
    if (!cfg->jwt_key_file) {
        snprintf(errstr, errstr_size,
                 "--jwt-key-file is required (or --no-auth, for development only)");
        return -1;
    }
    FILE *fp = fopen(cfg->jwt_key_file, "rb");
    if (!fp) {
        snprintf(errstr, errstr_size, "--jwt-key-file %s: %s", cfg->jwt_key_file,
                 strerror(errno));
        return -1;
    }
    gw->jwt_key = codec_xmalloc(KEY_FILE_MAX + 1);
    gw->jwt_key_len = fread(gw->jwt_key, 1, KEY_FILE_MAX + 1, fp);
    fclose(fp);
    /* An HMAC secret is the file's bytes; a trailing newline (echo > file) is not
     * meant to be part of it. */
    if (!strcmp(cfg->jwt_alg, "HS256"))
        while (gw->jwt_key_len && (gw->jwt_key[gw->jwt_key_len - 1] == '\n' ||
                                   gw->jwt_key[gw->jwt_key_len - 1] == '\r'))
            gw->jwt_key_len--;
    gw->jwt_key[gw->jwt_key_len < KEY_FILE_MAX ? gw->jwt_key_len : KEY_FILE_MAX] = '\0';
    if (gw->jwt_key_len == 0 || gw->jwt_key_len > KEY_FILE_MAX) {
        snprintf(errstr, errstr_size, "--jwt-key-file %s: %s", cfg->jwt_key_file,
                 gw->jwt_key_len ? "larger than 1 MiB" : "empty");
        return -1;
    }
    if (strcmp(cfg->jwt_alg, "HS256") && !strstr(gw->jwt_key, "-----BEGIN")) {
        snprintf(errstr, errstr_size, "--jwt-key-file %s: %s needs a PEM public key",
                 cfg->jwt_key_file, cfg->jwt_alg);
        return -1;
    }
    return 0;
}

void gw_identity_clear(gw_identity_t *ident)
{
    free(ident->user);
    free(ident->client_prefix);
    codec_value_destroy(ident->claims);
    for (size_t i = 0; i < ident->n_models; i++)
        free(ident->models[i]);
    free(ident->models);
    memset(ident, 0, sizeof(*ident));
}

void gw_identity_copy(gw_identity_t *dst, const gw_identity_t *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->user = src->user ? codec_xmemdup(src->user, strlen(src->user)) : NULL;
    dst->client_prefix =
        src->client_prefix ? codec_xmemdup(src->client_prefix, strlen(src->client_prefix))
                           : NULL;
    dst->claims = src->claims ? codec_value_copy(src->claims) : NULL;
    if (src->models) {
        dst->models = codec_xcalloc(src->n_models + 1, sizeof(char *));
        for (size_t i = 0; i < src->n_models; i++)
            dst->models[i] = codec_xmemdup(src->models[i], strlen(src->models[i]));
    }
    dst->n_models = src->n_models;
    dst->read_only = src->read_only;
    dst->expires = src->expires;
}

static void tokens_clear(processor_gateway_t *gw)
{
    gw_token_t *t, *tmp;
    HASH_ITER(hh, gw->tokens, t, tmp)
    {
        HASH_DEL(gw->tokens, t);
        gw_identity_clear(&t->ident);
        free(t->token);
        free(t);
    }
    gw->n_tokens = 0;
}

void gw_auth_destroy(processor_gateway_t *gw)
{
    tokens_clear(gw);
    gw_bucket_t *b, *btmp;
    HASH_ITER(hh, gw->buckets, b, btmp)
    {
        HASH_DEL(gw->buckets, b);
        free(b->who);
        free(b);
    }
    free(gw->jwt_key);
    gw->jwt_key = NULL;
}

/* A numeric claim in seconds (JSON allows 1.7e9 as well as 1700000000), or -1. */
static int64_t time_claim(const codec_value_t *claims, const char *name)
{
    const codec_value_t *v = codec_map_get(claims, name, strlen(name));
    if (v && v->type == CODEC_VALUE_INT)
        return v->u.i;
    if (v && v->type == CODEC_VALUE_FLOAT && v->u.f >= 0 && v->u.f < 9e15)
        return (int64_t)floor(v->u.f);
    return v ? -2 : -1;
}

/* Fills ident from the verified claims (taking them over). @returns 0, or
 * GW_UNAUTHORIZED and why. */
static int identity_from_claims(gw_identity_t *ident, codec_value_t *claims, char *why,
                                size_t why_size)
{
    memset(ident, 0, sizeof(*ident));
    ident->claims = claims;
    codec_value_t *sub = codec_map_take(claims, "sub", 3);
    if (!sub || sub->type != CODEC_VALUE_STR || sub->u.str.len == 0) {
        codec_value_destroy(sub);
        snprintf(why, why_size, "the token has no sub (the user it stands for)");
        return GW_UNAUTHORIZED;
    }
    ident->user = codec_xmemdup(sub->u.str.ptr, sub->u.str.len);
    char prefix[32];
    int n = snprintf(prefix, sizeof(prefix), "%zu:", (size_t)sub->u.str.len);
    ident->client_prefix = codec_xmalloc((size_t)n + sub->u.str.len + 2);
    memcpy(ident->client_prefix, prefix, (size_t)n);
    memcpy(ident->client_prefix + n, sub->u.str.ptr, sub->u.str.len);
    memcpy(ident->client_prefix + n + sub->u.str.len, "/", 2);
    codec_value_destroy(sub);
    int64_t exp = time_claim(claims, "exp"), nbf = time_claim(claims, "nbf");
    int64_t now = (int64_t)time(NULL);
    if (exp == -2 || nbf == -2) {
        snprintf(why, why_size, "the token's exp or nbf is not a number");
        return GW_UNAUTHORIZED;
    }
    if (exp >= 0 && now >= exp) {
        snprintf(why, why_size, "the token expired");
        return GW_UNAUTHORIZED;
    }
    if (nbf >= 0 && now < nbf) {
        snprintf(why, why_size, "the token is not valid yet (nbf)");
        return GW_UNAUTHORIZED;
    }
    ident->expires = exp > 0 ? exp : 0;
    const codec_value_t *write = codec_map_get(claims, "write", 5);
    if (write && write->type != CODEC_VALUE_BOOL) {
        snprintf(why, why_size, "the token's write claim is not true or false");
        return GW_UNAUTHORIZED;
    }
    ident->read_only = write && !write->u.b;
    const codec_value_t *models = codec_map_get(claims, "models", 6);
    if (models) {
        if (models->type != CODEC_VALUE_ARRAY) {
            snprintf(why, why_size, "the token's models claim is not a list of patterns");
            return GW_UNAUTHORIZED;
        }
        ident->models = codec_xcalloc(models->u.array.len + 1, sizeof(char *));
        for (uint32_t i = 0; i < models->u.array.len; i++) {
            const codec_value_t *m = models->u.array.items[i];
            if (m->type != CODEC_VALUE_STR) {
                snprintf(why, why_size,
                         "the token's models claim is not a list of "
                         "patterns");
                return GW_UNAUTHORIZED;
            }
            ident->models[ident->n_models++] = codec_xmemdup(m->u.str.ptr, m->u.str.len);
        }
    }
    return 0;
}

/* Verifies token: its signature under the key, with the configured algorithm only.
 * @returns 0 and ident, or GW_UNAUTHORIZED and why. */
static int verify(processor_gateway_t *gw, const char *token, gw_identity_t *ident,
                  char *why, size_t why_size)
{
    jwt_t *jwt = NULL;
    int rc =
        jwt_decode(&jwt, token, (const unsigned char *)gw->jwt_key, (int)gw->jwt_key_len);
    if (rc || !jwt) {
        snprintf(why, why_size, "the token is not a valid JWT signed with the key");
        return GW_UNAUTHORIZED;
    }
    jwt_alg_t want = !strcmp(gw->cfg->jwt_alg, "RS256")   ? JWT_ALG_RS256
                     : !strcmp(gw->cfg->jwt_alg, "ES256") ? JWT_ALG_ES256
                                                          : JWT_ALG_HS256;
    jwt_alg_t alg = jwt_get_alg(jwt);
    if (alg != want) {
        jwt_free(jwt);
        snprintf(why, why_size, "the token is signed with %s, not %s",
                 jwt_alg_str(alg) ? jwt_alg_str(alg) : "nothing", gw->cfg->jwt_alg);
        return GW_UNAUTHORIZED;
    }
    char *json = jwt_get_grants_json(jwt, NULL);
    jwt_free(jwt);
    codec_value_t *claims = NULL;
    char err[256];
    if (!json ||
        codec_json_decode(json, strlen(json), &codec_limits_default, &claims, err,
                          sizeof(err)) ||
        claims->type != CODEC_VALUE_MAP) {
        free(json);
        codec_value_destroy(claims);
        snprintf(why, why_size, "the token's claims are not a JSON object");
        return GW_UNAUTHORIZED;
    }
    free(json);
    int code = identity_from_claims(ident, claims, why, why_size);
    if (code)
        gw_identity_clear(ident);
    return code;
}

const gw_identity_t *gw_auth_check(processor_gateway_t *gw, const char *token, int *code,
                                   char *why, size_t why_size)
{
    static const gw_identity_t nobody = {.client_prefix = ""};
    if (gw->cfg->no_auth)
        return &nobody;
    if (!token || !*token) {
        *code = GW_UNAUTHORIZED;
        snprintf(why, why_size,
                 "no token: send Authorization: Bearer <JWT> (or "
                 "?access_token= on WebSocket and event streams)");
        return NULL;
    }
    gw_token_t *t = NULL;
    HASH_FIND_STR(gw->tokens, token, t);
    if (!t) {
        gw_identity_t ident;
        if ((*code = verify(gw, token, &ident, why, why_size)))
            return NULL;
        if (gw->n_tokens >= TOKEN_CACHE_MAX)
            tokens_clear(gw);
        t = codec_xcalloc(1, sizeof(*t));
        t->token = codec_xmemdup(token, strlen(token));
        t->ident = ident;
        HASH_ADD_KEYPTR(hh, gw->tokens, t->token, strlen(t->token), t);
        gw->n_tokens++;
    }
    if (t->ident.expires && (int64_t)time(NULL) >= t->ident.expires) {
        *code = GW_UNAUTHORIZED;
        snprintf(why, why_size, "the token expired");
        return NULL;
    }
    return &t->ident;
}

bool gw_auth_model_allowed(const gw_identity_t *ident, const char *model)
{
    if (!ident->models)
        return true;
    for (size_t i = 0; i < ident->n_models; i++)
        if (!fnmatch(ident->models[i], model, 0))
            return true;
    return false;
}

unsigned gw_rate_take(processor_gateway_t *gw, const char *who)
{
    const processor_config_t *cfg = gw->cfg;
    if (!cfg->rate_limit)
        return 0;
    double now = processor_monotonic_s();
    gw_bucket_t *b = NULL;
    HASH_FIND_STR(gw->buckets, who, b);
    if (!b) {
        if (HASH_COUNT(gw->buckets) >= BUCKET_CACHE_MAX) {
            gw_bucket_t *x, *tmp;
            HASH_ITER(hh, gw->buckets, x, tmp)
            {
                HASH_DEL(gw->buckets, x);
                free(x->who);
                free(x);
            }
        }
        b = codec_xcalloc(1, sizeof(*b));
        b->who = codec_xmemdup(who, strlen(who));
        b->tokens = (double)cfg->rate_burst;
        b->at = now;
        HASH_ADD_KEYPTR(hh, gw->buckets, b->who, strlen(b->who), b);
    }
    b->tokens += (now - b->at) * (double)cfg->rate_limit;
    if (b->tokens > (double)cfg->rate_burst)
        b->tokens = (double)cfg->rate_burst;
    b->at = now;
    if (b->tokens >= 1) {
        b->tokens -= 1;
        return 0;
    }
    return (unsigned)ceil((1 - b->tokens) / (double)cfg->rate_limit);
}
