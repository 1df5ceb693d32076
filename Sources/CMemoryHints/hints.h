// Cache hints Swift has no spelling for. Header-only: each is one instruction, inlined into the
// Swift kernels that call it.
#ifndef MOESCOPE_MEMORY_HINTS_H
#define MOESCOPE_MEMORY_HINTS_H

// Asks for the 64-byte line at `address` to be brought toward the core (x86: prefetcht2, into
// L2): a hint only, so an address past the end of a mapping never faults. The matrix-vector
// kernels issue it a row group ahead of the rows they read.
static inline void moescope_prefetch_line(const void *address) { __builtin_prefetch(address, 0, 1); }

#endif
