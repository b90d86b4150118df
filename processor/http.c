/* processor/http.c - a GET-only endpoint on libmicrohttpd (see http.h).
 *
 * One internal polling thread serves every connection: scrapes and probes are rare and
 * cheap, and a single thread makes render() calls sequential, so the renderer needs
 * no lock of its own. */
#include "http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"

struct processor_http_s {
    struct MHD_Daemon *daemon;
    processor_http_render_t render;
    void *ctx;
};

static enum MHD_Result queue_text(struct MHD_Connection *conn, unsigned status,
                                  char *body, size_t len, const char *content_type)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_state)
{
    (void)version;
    (void)upload_data;
    processor_http_t *http = cls;
    /* The first call per request only announces its headers; answer on the second,
     * once any (ignored) body has been read. */
    static int announced;
    if (!*req_state) {
        *req_state = &announced;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD)) {
        char *body = codec_xmemdup("only GET\n", 9);
        return queue_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, body, 9,
                          "text/plain; charset=utf-8");
    }
    char *body = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&body, &len);
    if (!fp)
        return MHD_NO;
    int status = http->render(http->ctx, url, fp);
    if (status == 404)
        fprintf(fp, "not found: %s (try /metrics, /healthz or /readyz)\n", url);
    fclose(fp);
    const char *type = !strcmp(url, "/metrics")
                           ? "text/plain; version=0.0.4; charset=utf-8"
                           : "text/plain; charset=utf-8";
    return queue_text(conn, (unsigned)status, body, len, type);
}

processor_http_t *processor_http_start(const char *address, uint16_t port,
                                       processor_http_render_t render, void *ctx,
                                       char *errstr, size_t errstr_size)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (address && *address) {
        struct addrinfo hints = {
            .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
        struct addrinfo *ai = NULL;
        int err = getaddrinfo(address, NULL, &hints, &ai);
        if (err || !ai) {
            snprintf(errstr, errstr_size, "cannot serve HTTP on %s: %s", address,
                     err ? gai_strerror(err) : "no address");
            return NULL;
        }
        struct sockaddr_storage sa;
        memset(&sa, 0, sizeof(sa));
        memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
        freeaddrinfo(ai);
        if (sa.ss_family == AF_INET6) {
            ((struct sockaddr_in6 *)&sa)->sin6_port = htons(port);
            flags |= MHD_USE_IPv6;
        } else {
            ((struct sockaddr_in *)&sa)->sin_port = htons(port);
        }
        processor_http_t *http = codec_xcalloc(1, sizeof(*http));
        http->render = render;
        http->ctx = ctx;
        errno = 0;
        http->daemon = MHD_start_daemon(
            flags, port, NULL, NULL, on_request, http, MHD_OPTION_SOCK_ADDR,
            (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
        if (!http->daemon) {
            snprintf(errstr, errstr_size, "cannot serve HTTP on %s port %u: %s", address,
                     (unsigned)port,
                     errno ? strerror(errno) : "libmicrohttpd refused to start");
            free(http);
            return NULL;
        }
        return http;
    }
    processor_http_t *http = codec_xcalloc(1, sizeof(*http));
    http->render = render;
    http->ctx = ctx;
    /* IPv6 and IPv4 on one socket where the host has IPv6 (IPv6-only clusters probe
     * over it), else IPv4 alone. */
    for (int attempt = 0; attempt < 2 && !http->daemon; attempt++) {
        errno = 0;
        http->daemon = MHD_start_daemon(
            flags | (attempt == 0 ? MHD_USE_DUAL_STACK : 0), port, NULL, NULL, on_request,
            http, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    }
    if (!http->daemon) {
        snprintf(errstr, errstr_size, "cannot serve HTTP on port %u: %s", (unsigned)port,
                 errno ? strerror(errno) : "libmicrohttpd refused to start");
        free(http);
        return NULL;
    }
    return http;
}

void processor_http_stop(processor_http_t *http)
{
    if (!http)
        return;
    MHD_stop_daemon(http->daemon);
    free(http);
}
