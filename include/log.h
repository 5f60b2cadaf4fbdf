/*
 * log.h - the log family: log_error/warn/info/debug to stderr.
 *
 * One line per message: "TIME LEVEL function: text" (TIME in UTC, ISO 8601
 * with milliseconds). stderr, so journald keeps it under systemd. The level
 * is one atomic, set at start and on reload.
 */
#ifndef FO_LOG_H
#define FO_LOG_H

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_set_level(enum log_level level);
/* Parses "error", "warn", "info", "debug"; returns -1 on anything else. */
int log_level_parse(const char *name);
const char *log_level_name(enum log_level level);

void log_write(enum log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(...) log_write(LOG_LVL_ERROR, __func__, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LVL_WARN, __func__, __VA_ARGS__)
#define log_info(...)  log_write(LOG_LVL_INFO, __func__, __VA_ARGS__)
#define log_debug(...) log_write(LOG_LVL_DEBUG, __func__, __VA_ARGS__)

#endif
