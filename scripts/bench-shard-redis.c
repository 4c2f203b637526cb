/* The Lookup anchor: Redis MGET of the same batches through pipelined hiredis connections.
 *
 *   bench-shard-redis load HOST PORT ITEMS_NPY            SET "<id>" -> the row's 256 bytes (f32 x 64)
 *   bench-shard-redis mget HOST PORT ROWS BATCH THREADS DEPTH WARMUP_S DURATION_S SEED
 *
 * mget: THREADS threads, one connection each, DEPTH MGETs of BATCH uniform random ids in flight
 * per connection (pipelined: a new MGET is written as soon as one reply is read): a closed loop at
 * THREADS x DEPTH. Counts MGETs and non-nil values completed in the measured phase and the latency
 * of each MGET from its write to its reply. Prints one JSON line.
 * Build: cc -O2 -pthread bench-shard-redis.c -lhiredis -o bench-shard-redis
 */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static uint64_t rng_next(uint64_t *s) { uint64_t z = (*s += 0x9E3779B97F4A7C15ULL); z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL; z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL; return z ^ (z >> 31); }
static int cmp_double(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

static const char *host; static int port; static long rows; static int batch, depth; static double t_measure, t_end; static uint64_t seed0;

typedef struct { int index; long mgets, values, errors; double *lat; long nlat, caplat; } worker_t;

static void append_mget(redisContext *c, uint64_t *s, char **argv, size_t *argl, char *keybuf) {
    argv[0] = "MGET"; argl[0] = 4;
    for (int i = 0; i < batch; i++) {
        char *k = keybuf + i * 24;
        argl[i + 1] = (size_t)snprintf(k, 24, "%lu", (unsigned long)(rng_next(s) % (uint64_t)rows));
        argv[i + 1] = k;
    }
    redisAppendCommandArgv(c, batch + 1, (const char **)argv, argl);
}

static void *worker(void *arg) {
    worker_t *w = arg;
    redisContext *c = redisConnect(host, port);
    if (!c || c->err) { fprintf(stderr, "connect: %s\n", c ? c->errstr : "oom"); exit(1); }
    uint64_t s = seed0 * 1000003 + (uint64_t)w->index;
    char **argv = malloc(sizeof(char *) * (batch + 1)); size_t *argl = malloc(sizeof(size_t) * (batch + 1));
    char *keybuf = malloc((size_t)batch * 24);
    double *sent = malloc(sizeof(double) * depth);   /* ring of write times, FIFO like the replies */
    int head = 0, inflight = depth;
    for (int i = 0; i < depth; i++) { append_mget(c, &s, argv, argl, keybuf); sent[i] = now(); }
    for (;;) {
        redisReply *r;
        if (redisGetReply(c, (void **)&r) != REDIS_OK) { fprintf(stderr, "reply: %s\n", c->errstr); exit(1); }
        double t = now(), t0 = sent[head];
        if (t0 >= t_measure && t0 < t_end) {
            if (r->type == REDIS_REPLY_ARRAY) {
                w->mgets++;
                for (size_t i = 0; i < r->elements; i++) if (r->element[i]->type == REDIS_REPLY_STRING && r->element[i]->len == 256) w->values++;
            } else w->errors++;
            if (w->nlat == w->caplat) { w->caplat = w->caplat ? w->caplat * 2 : 65536; w->lat = realloc(w->lat, sizeof(double) * w->caplat); }
            w->lat[w->nlat++] = t - t0;
        }
        freeReplyObject(r);
        if (t < t_end) { append_mget(c, &s, argv, argl, keybuf); sent[head] = now(); head = (head + 1) % depth; }
        else { head = (head + 1) % depth; if (--inflight == 0) break; }   /* drain what is in flight */
    }
    redisFree(c);
    return NULL;
}

static int load(const char *npy) {
    FILE *f = fopen(npy, "rb");
    if (!f) { perror(npy); return 1; }
    unsigned char pre[10];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6)) { fprintf(stderr, "%s: not .npy\n", npy); return 1; }
    long hlen = pre[8] | (pre[9] << 8);
    char *hdr = malloc(hlen + 1); if (fread(hdr, 1, hlen, f) != (size_t)hlen) return 1; hdr[hlen] = 0;
    long n = 0, d = 0;
    char *shape = strstr(hdr, "'shape': (");
    if (!strstr(hdr, "'<f4'") || !shape || sscanf(shape, "'shape': (%ld, %ld)", &n, &d) != 2 || d != 64) {
        fprintf(stderr, "%s: want float32 N x 64 (header %s)\n", npy, hdr); return 1;
    }
    redisContext *c = redisConnect(host, port);
    if (!c || c->err) { fprintf(stderr, "connect failed\n"); return 1; }
    char row[256], key[24];
    long pending = 0;
    for (long i = 0; i < n; i++) {
        if (fread(row, 1, 256, f) != 256) { fprintf(stderr, "short read at row %ld\n", i); return 1; }
        snprintf(key, sizeof key, "%ld", i);
        redisAppendCommand(c, "SET %s %b", key, row, (size_t)256);
        if (++pending == 1000 || i == n - 1) {
            while (pending--) { redisReply *r; if (redisGetReply(c, (void **)&r) != REDIS_OK) { fprintf(stderr, "%s\n", c->errstr); return 1; } freeReplyObject(r); }
            pending = 0;
        }
    }
    fprintf(stderr, "loaded %ld rows\n", n);
    redisFree(c);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 5 && !strcmp(argv[1], "load")) { host = argv[2]; port = atoi(argv[3]); return load(argv[4]); }
    if (argc != 11 || strcmp(argv[1], "mget")) {
        fprintf(stderr, "usage: %s load HOST PORT ITEMS_NPY | mget HOST PORT ROWS BATCH THREADS DEPTH WARMUP_S DURATION_S SEED\n", argv[0]);
        return 2;
    }
    host = argv[2]; port = atoi(argv[3]); rows = atol(argv[4]); batch = atoi(argv[5]);
    int threads = atoi(argv[6]); depth = atoi(argv[7]);
    double warm = atof(argv[8]), dur = atof(argv[9]); seed0 = strtoull(argv[10], 0, 10);
    if (rows < 1 || batch < 1 || threads < 1 || depth < 1 || dur <= 0) { fprintf(stderr, "bad arguments\n"); return 2; }
    double t0 = now(); t_measure = t0 + warm; t_end = t_measure + dur;
    pthread_t *th = calloc(threads, sizeof *th); worker_t *ws = calloc(threads, sizeof *ws);
    for (int i = 0; i < threads; i++) { ws[i].index = i; pthread_create(&th[i], 0, worker, &ws[i]); }
    long mgets = 0, values = 0, errors = 0, nlat = 0;
    for (int i = 0; i < threads; i++) { pthread_join(th[i], 0); mgets += ws[i].mgets; values += ws[i].values; errors += ws[i].errors; nlat += ws[i].nlat; }
    double *all = malloc(sizeof(double) * (nlat ? nlat : 1)); long k = 0;
    for (int i = 0; i < threads; i++) { memcpy(all + k, ws[i].lat, sizeof(double) * ws[i].nlat); k += ws[i].nlat; }
    qsort(all, nlat, sizeof(double), cmp_double);
#define PCT(p) (nlat ? all[(long)((p) * (nlat - 1))] * 1e3 : 0)
    printf("{\"mgets\":%ld,\"values\":%ld,\"errors\":%ld,\"duration_s\":%.3f,\"mget_per_s\":%.1f,\"vectors_per_s\":%.1f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"batch\":%d,\"threads\":%d,\"depth\":%d}\n",
           mgets, values, errors, dur, mgets / dur, values / dur, PCT(0.5), PCT(0.99), nlat ? all[nlat - 1] * 1e3 : 0, batch, threads, atoi(argv[7]));
    return 0;
}
