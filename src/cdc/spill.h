/*
** spill.h
** The buffer that holds one source transaction's raw pgoutput messages
** between the moment they arrive and the moment the transaction is
** applied.  Records live in memory until the buffer passes its memory
** cap; then everything moves to a file in the spill directory (the
** migration's state directory) and later records are appended there
** through a small write-behind buffer, so a transaction of any size
** costs at most 'cap' bytes of RAM.
**
** Spill files are unlinked as soon as they are created: the open file
** descriptor is the only reference, so a killed process leaves nothing
** behind and the space is returned when the buffer is freed.
**
** Records are framed [u32 length][bytes] in host byte order (the file
** never outlives the process).  Offsets are logical: the byte position
** in the concatenation of the file part and the memory part, so a
** subtransaction abort can truncate at an offset recorded earlier.
** Not thread-safe: one owner at a time (the receiver fills a buffer,
** then hands it to the applier).
*/
#ifndef PGTIDE_SPILL_H
#define PGTIDE_SPILL_H

#include <stddef.h>
#include <stdint.h>

#include "cdc/cdcerr.h"
#include "util/buf.h"

#define SPILL_CHUNK (1u << 20)   /* write-behind buffer once spilled */

typedef struct SpillBuf {
  Buf mem;                       /* records after the file part */
  int fd;                        /* -1 until spilled */
  uint64_t file_len;             /* bytes in the file */
  size_t cap;                    /* memory cap before spilling */
  char *dir;                     /* where spill files go (owned) */
  uint64_t nrecords;
} SpillBuf;

void spill_init(SpillBuf *sb, const char *dir, size_t cap);
void spill_free(SpillBuf *sb);   /* closes the file, frees memory */

/* Append one record; spills when the memory part passes the cap.
   0, or -1 with err (disk full, unwritable directory). */
int spill_append(SpillBuf *sb, const void *rec, size_t len, CdcError *err);
/* Force the memory part to disk now (memory pressure elsewhere). */
int spill_flush(SpillBuf *sb, CdcError *err);

uint64_t spill_size(const SpillBuf *sb);       /* logical bytes */
size_t spill_mem(const SpillBuf *sb);          /* bytes held in RAM */
int spill_spilled(const SpillBuf *sb);         /* 1 when a file is used */

/* Drop everything from logical offset 'off' on (off <= size), and the
   record count with it ('nrecords' is the count at that offset). */
int spill_truncate(SpillBuf *sb, uint64_t off, uint64_t nrecords, CdcError *err);

/* Sequential reader over a complete buffer.  The record returned stays
   valid until the next call.  Reads the file in SPILL_CHUNK pieces, so a
   record larger than that gets its own allocation. */
typedef struct SpillReader {
  SpillBuf *sb;
  uint64_t pos;                  /* logical position of the next record */
  Buf chunk;                     /* file bytes [chunk_off, chunk_off+len) */
  uint64_t chunk_off;
} SpillReader;

void spill_reader_init(SpillReader *r, SpillBuf *sb);
void spill_reader_free(SpillReader *r);
/* 1 with the record in rec and len, 0 at the end, -1 with err. */
int spill_read(SpillReader *r, const uint8_t **rec, size_t *len, CdcError *err);

#endif
