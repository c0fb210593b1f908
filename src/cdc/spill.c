/*
** spill.c
** Transaction buffers that move to disk past a memory cap (see spill.h).
*/
#include "cdc/spill.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An empty buffer keeping up to 'cap' bytes in memory before spilling
   to a file in dir (default /tmp); the buffer owns a copy of dir. */
void spill_init (SpillBuf *sb, const char *dir, size_t cap) {
  buf_init(&sb->mem);
  sb->fd = -1;
  sb->file_len = 0;
  sb->cap = cap;
  sb->dir = xstrdup(dir != NULL && dir[0] != '\0' ? dir : "/tmp");
  sb->nrecords = 0;
}

/* Close the spill file (it was unlinked at creation: the space goes
   back) and free the memory part; the buffer can be spill_init'ed again. */
void spill_free (SpillBuf *sb) {
  if (sb->fd >= 0)
    close(sb->fd);
  sb->fd = -1;
  buf_free(&sb->mem);
  free(sb->dir);
  sb->dir = NULL;
  sb->file_len = 0;
  sb->nrecords = 0;
}

uint64_t spill_size (const SpillBuf *sb) {
  return sb->file_len + sb->mem.len;
}

size_t spill_mem (const SpillBuf *sb) {
  return sb->mem.cap;
}

int spill_spilled (const SpillBuf *sb) {
  return sb->fd >= 0;
}

/* Create the spill file without a name: O_TMPFILE where the file system
   supports it, so a kill -9 at any moment leaves nothing behind;
   otherwise mkostemp and an immediate unlink (a kill between the two
   leaves a pgtide-spill-* file, the only window). */
static int open_file (SpillBuf *sb, CdcError *err) {
  Buf path = BUF_INIT;
  int fd = -1;
#ifdef O_TMPFILE
  fd = open(sb->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) {
    sb->fd = fd;
    return 0;
  }
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
    cdc_err_set(err, CDC_ERR_IO, 0, "cannot create a spill file in %s: %s", sb->dir, strerror(errno));
    return -1;
  }
#endif
  buf_printf(&path, "%s/pgtide-spill-XXXXXX", sb->dir);
  fd = mkostemp(path.data, O_CLOEXEC);
  if (fd < 0) {
    cdc_err_set(err, CDC_ERR_IO, 0, "cannot create a spill file in %s: %s", sb->dir, strerror(errno));
    buf_free(&path);
    return -1;
  }
  unlink(path.data);
  buf_free(&path);
  sb->fd = fd;
  return 0;
}

/* Append n bytes at the end of the file, retrying short writes and
   EINTR.  -1 with err (CDC_ERR_IO). */
static int write_at (SpillBuf *sb, const void *data, size_t n, CdcError *err) {
  const char *p = data;
  while (n > 0) {
    ssize_t w = pwrite(sb->fd, p, n, (off_t)sb->file_len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      cdc_err_set(err, CDC_ERR_IO, 0, "cannot write a spill file in %s: %s", sb->dir,
                  w < 0 ? strerror(errno) : "short write");
      return -1;
    }
    p += w;
    n -= (size_t)w;
    sb->file_len += (uint64_t)w;
  }
  return 0;
}

/* See spill.h: write the memory part to the file (created on first
   use); after that memory is a write-behind buffer of SPILL_CHUNK. */
int spill_flush (SpillBuf *sb, CdcError *err) {
  if (sb->fd < 0 && open_file(sb, err) != 0)
    return -1;
  if (sb->mem.len > 0 && write_at(sb, sb->mem.data, sb->mem.len, err) != 0)
    return -1;
  /* from now on the memory part is only a write-behind buffer */
  if (sb->mem.cap > 2 * SPILL_CHUNK)
    buf_free(&sb->mem);
  else
    buf_reset(&sb->mem);
  return 0;
}

/* See spill.h: a record is a 4-byte length (host order) and its bytes;
   records bigger than a chunk go straight to the file. */
int spill_append (SpillBuf *sb, const void *rec, size_t len, CdcError *err) {
  uint32_t hdr;
  size_t limit = sb->fd >= 0 ? SPILL_CHUNK : sb->cap;
  if (len > 0xfffffff0u) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "spill: record of %zu bytes is too large", len);
    return -1;
  }
  hdr = (uint32_t)len;
  if (sb->mem.len + sizeof(hdr) + len > limit) {
    if (spill_flush(sb, err) != 0)
      return -1;
    if (sizeof(hdr) + len > SPILL_CHUNK) {  /* big record: straight to the file */
      if (write_at(sb, &hdr, sizeof(hdr), err) != 0 || write_at(sb, rec, len, err) != 0)
        return -1;
      sb->nrecords++;
      return 0;
    }
  }
  buf_append(&sb->mem, &hdr, sizeof(hdr));
  buf_append(&sb->mem, rec, len);
  sb->nrecords++;
  return 0;
}

/* See spill.h: cut the memory part, or the file (and drop the memory
   part) when off lies inside it. */
int spill_truncate (SpillBuf *sb, uint64_t off, uint64_t nrecords, CdcError *err) {
  if (off > spill_size(sb)) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "spill: truncate past the end");
    return -1;
  }
  if (off >= sb->file_len) {
    sb->mem.len = (size_t)(off - sb->file_len);
  } else {
    if (ftruncate(sb->fd, (off_t)off) != 0) {
      cdc_err_set(err, CDC_ERR_IO, 0, "cannot truncate a spill file: %s", strerror(errno));
      return -1;
    }
    sb->file_len = off;
    sb->mem.len = 0;
  }
  if (sb->mem.data != NULL)
    sb->mem.data[sb->mem.len] = '\0';
  sb->nrecords = nrecords;
  return 0;
}

/* A reader at the first record of sb; sb must outlive it. */
void spill_reader_init (SpillReader *r, SpillBuf *sb) {
  r->sb = sb;
  r->pos = 0;
  buf_init(&r->chunk);
  r->chunk_off = 0;
}

void spill_reader_free (SpillReader *r) {
  buf_free(&r->chunk);
}

/* Make the chunk hold file bytes [off, off+n). */
static int load (SpillReader *r, uint64_t off, size_t n, CdcError *err) {
  size_t got = 0;
  if (r->chunk.cap > 2 * SPILL_CHUNK && n <= SPILL_CHUNK)
    buf_free(&r->chunk);       /* give back a big record's buffer */
  buf_reset(&r->chunk);
  buf_reserve(&r->chunk, n);
  while (got < n) {
    ssize_t k = pread(r->sb->fd, r->chunk.data + got, n - got, (off_t)(off + got));
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      cdc_err_set(err, CDC_ERR_IO, 0, "cannot read a spill file: %s",
                  k < 0 ? strerror(errno) : "unexpected end of file");
      return -1;
    }
    got += (size_t)k;
  }
  r->chunk.len = n;
  r->chunk_off = off;
  return 0;
}

/* Whether file bytes [off, off+n) are in the reader's chunk. */
static int covered (const SpillReader *r, uint64_t off, uint64_t n) {
  return off >= r->chunk_off && off + n <= r->chunk_off + r->chunk.len;
}

/* See spill.h: the next record, from the file through a chunk of
   SPILL_CHUNK bytes (or the record's size) or from memory; *rec stays
   valid until the next read.  Corrupt lengths are CDC_ERR_IO. */
int spill_read (SpillReader *r, const uint8_t **rec, size_t *len, CdcError *err) {
  SpillBuf *sb = r->sb;
  uint32_t hdr;
  if (r->pos >= spill_size(sb))
    return 0;
  if (r->pos < sb->file_len) {
    uint64_t avail = sb->file_len - r->pos;
    if (avail < sizeof(hdr)) {
      cdc_err_set(err, CDC_ERR_IO, 0, "spill file is corrupt (truncated header)");
      return -1;
    }
    if (!covered(r, r->pos, sizeof(hdr)) &&
        load(r, r->pos, (size_t)(avail < SPILL_CHUNK ? avail : SPILL_CHUNK), err) != 0)
      return -1;
    memcpy(&hdr, r->chunk.data + (r->pos - r->chunk_off), sizeof(hdr));
    if ((uint64_t)hdr + sizeof(hdr) > avail) {
      cdc_err_set(err, CDC_ERR_IO, 0, "spill file is corrupt (record past the end)");
      return -1;
    }
    if (!covered(r, r->pos, sizeof(hdr) + (uint64_t)hdr)) {
      size_t n = sizeof(hdr) + hdr > SPILL_CHUNK ? sizeof(hdr) + hdr
                 : (size_t)(avail < SPILL_CHUNK ? avail : SPILL_CHUNK);
      if (load(r, r->pos, n, err) != 0)
        return -1;
    }
    *rec = (const uint8_t *)r->chunk.data + (r->pos - r->chunk_off) + sizeof(hdr);
  } else {
    size_t off = (size_t)(r->pos - sb->file_len);
    if (sb->mem.len - off < sizeof(hdr)) {
      cdc_err_set(err, CDC_ERR_IO, 0, "spill buffer is corrupt (truncated header)");
      return -1;
    }
    memcpy(&hdr, sb->mem.data + off, sizeof(hdr));
    if (hdr > sb->mem.len - off - sizeof(hdr)) {
      cdc_err_set(err, CDC_ERR_IO, 0, "spill buffer is corrupt (record past the end)");
      return -1;
    }
    *rec = (const uint8_t *)sb->mem.data + off + sizeof(hdr);
  }
  *len = hdr;
  r->pos += sizeof(hdr) + hdr;
  return 1;
}
