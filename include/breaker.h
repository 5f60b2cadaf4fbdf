/*
 * breaker.h - the circuit breaker per host:port (v2, "Retries, circuit
 * breaker, rate").
 *
 * A breaker is closed until breaker_failures consecutive failed fetches to
 * its host:port (each attempt and each redirect hop counts against its own
 * host:port; see enum fetch_hop_outcome). Then it is open for
 * breaker_open_ms: items to it fail at once with circuit_open, without a
 * connection. After that it is half-open: one item goes through as a trial;
 * the trial's success closes it, its failure opens it again, and other
 * items are refused meanwhile.
 *
 * Two layers: struct breaker is the pure state machine (no lock, no clock:
 * the time is an argument), unit-tested alone; the table (breaker_check,
 * breaker_hop, breaker_trial_done) keeps one struct breaker per host:port
 * for the whole process, guarded by one mutex (a leaf lock: nothing is
 * called with it held). Keys are host_key() of the "host:port" given, so
 * that 127.1:80 and localhost:80 share one breaker. Only host:ports with
 * failures or a state other than closed are held, at most FO_BREAKER_MAX.
 */
#ifndef FO_BREAKER_H
#define FO_BREAKER_H

#include <stdint.h>

#include "fetch_req.h"

/* The values index the transitions metric (metrics_breaker_transition). */
enum breaker_state { BREAKER_CLOSED = 0, BREAKER_OPEN, BREAKER_HALF_OPEN, BREAKER_NSTATES };

/* May an item go to the host:port now? */
enum breaker_verdict {
    BREAKER_PASS = 0, /* closed: go */
    BREAKER_TRIAL,    /* half-open: go as the one trial (breaker_trial_done after) */
    BREAKER_REFUSE,   /* open, or a trial is running: fail it circuit_open */
};

struct breaker {
    enum breaker_state state;
    long failures;         /* consecutive failures while closed */
    int64_t open_until_us; /* open: refuses until then (monotonic) */
    int trial;             /* half-open: the trial is running */
};

/* The pure state machine. Each returns the state it moved to, or -1 when
 * the state did not change. */

/* An item asks to go at now_us (*verdict: the answer). An open breaker
 * whose time is up becomes half-open here. */
int breaker_admit(struct breaker *b, int64_t now_us, enum breaker_verdict *verdict);
/* A fetch (one hop) to the host:port ended: threshold consecutive failures
 * open a closed breaker for open_ms; in half-open, a success closes and a
 * failure opens again; a neutral outcome only ends a running trial. An open
 * breaker ignores reports (fetches started before it opened). */
int breaker_report(struct breaker *b, enum fetch_hop_outcome o, long threshold, long open_ms,
                   int64_t now_us);
/* The trial item ended without a report (aborted before its first hop):
 * the next item may be the trial. */
void breaker_end_trial(struct breaker *b);

/* The process-wide table (any thread). hostport is "host:port". */
enum breaker_verdict breaker_check(const char *hostport, int64_t now_us);
/* 1 if an item to hostport would be refused now (checked without taking
 * the trial): such an item need not wait for a rate token. */
int breaker_refuses(const char *hostport, int64_t now_us);
void breaker_hop(const char *hostport, enum fetch_hop_outcome o, long threshold, long open_ms,
                 int64_t now_us);
void breaker_trial_done(const char *hostport);
/* Forgets every breaker (tests). */
void breaker_reset(void);

#endif
