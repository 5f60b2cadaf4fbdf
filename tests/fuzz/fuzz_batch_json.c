/*
 * fuzz_batch_json.c - batch_parse on a JSON body (Content-Type
 * application/json): the array and object forms of CONTRACT.md.
 * See batch_common.h for the invariants.
 */
#include "batch_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_batch(data, size, 1);
    return 0;
}
