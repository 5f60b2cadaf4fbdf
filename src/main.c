/*
 * main.c - flags, configuration, start, signals, stop.
 *
 *   fanoutd [--config FILE] [--KEY-NAME VALUE ...] [--check-config]
 *
 * Signals are blocked in every thread and taken here with sigwait:
 * SIGHUP reloads the file (keeping the command-line overrides), SIGTERM or
 * SIGINT drains: new batches get 503, in-flight ones get shutdown_grace_ms
 * to finish, then what is left is answered with cancelled items; exit 0.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "config.h"
#include "daemon.h"
#include "fanoutd.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "server.h"

#define EXIT_USAGE      2
#define DRAIN_POLL_MS   50
#define STATUS_EVERY_MS 2000 /* STATUS= to systemd, when it listens */
#define STALL_MARGIN_MS 2000 /* beyond the longest fetch: the pool is wedged */

struct options {
    const char *config_path;
    int check_config;
    struct config_override *ov; /* borrowed strings from argv */
    size_t nov;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: fanoutd [--config FILE] [--KEY-NAME VALUE ...]\n"
            "       fanoutd --check-config [--config FILE] [--KEY-NAME VALUE ...]\n"
            "\n"
            "An HTTP fan-out gateway: POST /batch with a list of URLs, get one JSON\n"
            "document with every upstream response, in about the time of the slowest.\n"
            "\n"
            "  --config FILE          read the configuration from FILE (key = value lines);\n"
            "                         without it the built-in defaults apply\n"
            "  --check-config         parse the configuration, print every key as\n"
            "                         'key = value' and exit 0 (exit 2 on an error)\n"
            "  --help                 print this help and exit\n"
            "  --version              print the version and exit\n"
            "\n"
            "Every configuration key can be given as --key-name VALUE or --key-name=VALUE\n"
            "(underscores become dashes); the command line overrides the file:\n");
    config_print_help(out);
    fprintf(out, "\nSignals: SIGHUP reloads the file, SIGTERM drains and exits 0.\n");
}

/* Returns -1 to go on, else an exit status. */
static int parse_args(int argc, char **argv, struct options *opt)
{
    opt->ov = calloc((size_t)argc, sizeof(*opt->ov));
    if (opt->ov == NULL)
        return 1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = NULL;
        char name[64];

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("fanoutd %s\n", FANOUTD_VERSION);
            return 0;
        }
        if (strcmp(arg, "--check-config") == 0) {
            opt->check_config = 1;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0 || strlen(arg + 2) >= sizeof(name)) {
            fprintf(stderr, "fanoutd: unexpected argument '%s' (see --help)\n", arg);
            return EXIT_USAGE;
        }
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        memcpy(name, arg + 2, nlen);
        name[nlen] = '\0';
        if (eq != NULL)
            value = eq + 1;
        else if (i + 1 < argc)
            value = argv[++i];
        if (strcmp(name, "config") != 0 && config_key_for_flag(name) == NULL) {
            fprintf(stderr, "fanoutd: unknown option '--%s' (see --help)\n", name);
            return EXIT_USAGE;
        }
        if (value == NULL) {
            fprintf(stderr, "fanoutd: option '--%s' needs a value\n", name);
            return EXIT_USAGE;
        }
        if (strcmp(name, "config") == 0) {
            opt->config_path = value;
            continue;
        }
        opt->ov[opt->nov].key = config_key_for_flag(name);
        opt->ov[opt->nov++].value = value;
    }
    return -1;
}

/* Called often: feeds the systemd watchdog while the worker pool makes
 * progress, and sends a STATUS line now and then. */
static void tick(void)
{
    static int64_t last_status, last_watchdog; /* main thread only */
    static int wedged;
    int64_t now = fo_now_us(), wd = notify_watchdog_usec();

    server_reap();

    if (wd > 0 && now - last_watchdog >= wd / 2) {
        struct config *cfg = server_config();
        int64_t stall = ((int64_t)cfg->max_timeout_ms + STALL_MARGIN_MS) * 1000;
        config_unref(cfg);
        if (!daemon_stalled(now, stall)) {
            notify_send("WATCHDOG=1");
            last_watchdog = now;
            wedged = 0;
        } else if (!wedged) {
            log_error(
                "the worker pool has made no progress for over %lld ms with work "
                "waiting; no longer feeding the systemd watchdog",
                (long long)stall / 1000);
            wedged = 1;
        }
    }
    if (now - last_status >= STATUS_EVERY_MS * 1000) {
        notify_send("STATUS=%ld batches in flight, %ld items queued, %lld of %lld workers busy",
                    server_batches_in_flight(), daemon_queue_depth(),
                    (long long)atomic_load(&metrics.workers_busy),
                    (long long)atomic_load(&metrics.workers));
        last_status = now;
    }
}

/* Keys whose change on a reload is worth a warning: who may use fanoutd and
 * where it may fetch. */
static const char *const guarded_keys[] = { "auth_token", "allow", "deny" };

static void reload_failed(const char *why)
{
    log_error("reload failed, keeping the running configuration: %s", why);
    METRIC_ADD(reload_failures, 1);
    notify_send("READY=1\nSTATUS=reload failed, running the previous configuration");
}

static void reload(const struct options *opt)
{
    struct config *fresh, *old = server_config();
    struct fo_msg msg;

    notify_send("RELOADING=1\nMONOTONIC_USEC=%lld", (long long)fo_now_us());
    if (config_build(opt->config_path, opt->ov, opt->nov, &fresh, &msg) != FO_OK) {
        reload_failed(msg.text);
        config_unref(old);
        return;
    }
    /* An empty file, or one of only blank lines and comments, parses (every
     * key at its default), but is far more often a file caught half-written,
     * truncated or commented out by mistake: it would turn auth off. */
    if (opt->config_path != NULL && fresh->file_keys == 0) {
        fo_msg_set(&msg, "%s %s", opt->config_path,
                   fresh->file_bytes == 0 ? "is empty"
                                          : "has no settings (only blank lines or comments)");
        reload_failed(msg.text);
        config_unref(fresh);
        config_unref(old);
        return;
    }
    if (strcmp(fresh->listen, old->listen) != 0)
        log_warn("listen changed to %s: takes effect only after a restart", fresh->listen);
    if (fresh->listen_mode != old->listen_mode || fresh->reuse_port != old->reuse_port)
        log_warn("listen_mode or reuse_port changed: takes effect only after a restart");
    if (fresh->workers != old->workers)
        log_warn("workers changed to %ld: takes effect only after a restart", fresh->workers);
    for (size_t i = 0; i < FO_ARRAY_LEN(guarded_keys); i++) {
        if (!config_changed(old, fresh, guarded_keys[i]))
            continue;
        if (strcmp(guarded_keys[i], "auth_token") == 0)
            log_warn("reload changes auth_token (%s)",
                     fresh->auth_token[0] != '\0' ? "a token is required"
                                                  : "now empty: POST /batch needs no token");
        else
            log_warn("reload changes %s", guarded_keys[i]);
    }
    log_set_level((enum log_level)fresh->log_level);
    server_reload(fresh);
    config_unref(fresh);
    config_unref(old);
    METRIC_ADD(reloads, 1);
    log_info("configuration reloaded%s%s", opt->config_path ? " from " : "",
             opt->config_path ? opt->config_path : "");
    notify_send("READY=1\nSTATUS=configuration reloaded");
}

/* SIGTERM: drain within the grace time; a second SIGTERM cuts it short.
 * shared_port: other processes listen on the same port (reuse_port), so
 * this one leaves it at once and they take every new connection, instead
 * of answering them 503 draining. */
static void drain(const sigset_t *set, int shared_port)
{
    struct config *cfg = server_config();
    int64_t end = fo_now_ms() + cfg->shutdown_grace_ms;
    struct timespec zero = { 0, 0 };

    config_unref(cfg);
    notify_send("STOPPING=1\nSTATUS=draining");
    log_info("draining: %ld batches in flight", server_batches_in_flight());
    if (shared_port)
        server_stop_listening(1);
    daemon_drain();
    while (!server_wait_idle(DRAIN_POLL_MS)) {
        tick();
        int sig = sigtimedwait(set, NULL, &zero);
        if (sig == SIGTERM || sig == SIGINT) {
            log_warn("second stop signal: cancelling in-flight batches now");
            break;
        }
        if (fo_now_ms() >= end)
            break;
    }
    daemon_cancel_all();
    daemon_stop();
}

int main(int argc, char **argv)
{
    struct options opt = { 0 };
    struct listener lis = { .fd = -1 };
    struct config *cfg;
    struct fo_msg msg;
    sigset_t set;
    int status, listen_fd, shared_port;

    /* First of all: stop signals from ending start-up half-way. A SIGTERM
     * that arrives from here on is taken by the drain after start. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* A fixed mmap threshold (glibc's own moves up to 32 MiB after the first
     * big free): every block of a large body or answer is its own mapping,
     * given back to the kernel when it is freed, on whatever thread and in
     * whatever order. Heap blocks of the worker threads' arenas are not:
     * malloc_trim leaves the top of those arenas alone. */
    (void)mallopt(M_MMAP_THRESHOLD, FO_MMAP_THRESHOLD);
    if ((status = parse_args(argc, argv, &opt)) >= 0)
        goto out;
    if (config_build(opt.config_path, opt.ov, opt.nov, &cfg, &msg) != FO_OK) {
        fprintf(stderr, "fanoutd: %s\n", msg.text);
        status = EXIT_USAGE;
        goto out;
    }
    if (opt.check_config) {
        config_dump(cfg, stdout);
        config_unref(cfg);
        status = 0;
        goto out;
    }
    log_set_level((enum log_level)cfg->log_level);

    /* Before any thread: signals blocked (above, inherited by every thread),
     * libraries initialised. */
    signal(SIGPIPE, SIG_IGN);
    batch_json_init();
    json_object_seed(0);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("curl_global_init failed");
        config_unref(cfg);
        status = 1;
        goto out;
    }
    notify_init();
    listen_fd = notify_listen_fd();
    if (listen_fd < 0 && cfg->listen_addr.ss_family == AF_UNIX) {
        if (listener_open_unix(cfg, &lis, &msg) != FO_OK) {
            log_error("%s", msg.text);
            config_unref(cfg);
            curl_global_cleanup();
            status = EXIT_USAGE;
            goto out;
        }
        listen_fd = lis.fd;
        if (cfg->reuse_port)
            log_warn("reuse_port applies to a TCP listen address; ignored for %s", cfg->listen);
    }
    shared_port = listen_fd < 0 && cfg->reuse_port;
    if (daemon_start(cfg, listen_fd) != FO_OK) {
        config_unref(cfg);
        daemon_stop();
        listener_remove_file(&lis);
        curl_global_cleanup();
        status = 1;
        goto out;
    }
    config_unref(cfg);
    notify_send("READY=1");
    for (;;) {
        struct timespec wait = { 0, 200 * 1000000L };
        int sig = sigtimedwait(&set, NULL, &wait);
        tick();
        if (sig < 0)
            continue; /* timeout or EINTR */
        if (sig == SIGHUP) {
            reload(&opt);
            continue;
        }
        break;
    }
    drain(&set, shared_port);
    listener_remove_file(&lis);
    curl_global_cleanup();
    log_info("stopped");
    status = 0;
out:
    free(opt.ov);
    return status;
}
