/*
 * fuzz_batch_plain.c - batch_parse on a plain list body (any other
 * Content-Type): URLs separated by white space, '#' comment lines.
 * See batch_common.h for the invariants.
 */
#include "batch_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_batch(data, size, 0);
    return 0;
}
