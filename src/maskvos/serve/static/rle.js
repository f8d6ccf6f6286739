// COCO run-length encoding as pycocotools writes it: counts of alternating runs (background
// first) over the pixels in column-major order, packed into a string of 6-bit characters with
// each count after the second stored as the difference to the count two before.

/** Counts (array of ints) of a row-major Uint8Array mask of height h and width w. */
export function maskToCounts(mask, h, w) {
  const counts = [];
  let current = 0;
  let run = 0;
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) {
      const v = mask[y * w + x] ? 1 : 0;
      if (v !== current) {
        counts.push(run);
        run = 0;
        current = v;
      }
      run++;
    }
  }
  counts.push(run);
  return counts;
}

/** pycocotools' string form of counts (rleToString). */
export function countsToString(counts) {
  let s = "";
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x >>= 5;
      more = (c & 0x10) ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      s += String.fromCharCode(c + 48);
    }
  }
  return s;
}

/** Counts of pycocotools' string form (rleFrString). */
export function stringToCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = true;
    let c = 0;
    while (more) {
      c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/** {size: [h, w], counts: string} of a row-major Uint8Array mask. */
export function encode(mask, h, w) {
  return { size: [h, w], counts: countsToString(maskToCounts(mask, h, w)) };
}

/** Row-major Uint8Array (1 inside) of an RLE {size, counts}. */
export function decode(rle) {
  const [h, w] = rle.size;
  const out = new Uint8Array(h * w);
  forEachPixel(rle, (idx) => { out[idx] = 1; });
  return out;
}

/** Call fn(rowMajorIndex) for every pixel inside the mask of an RLE. */
export function forEachPixel(rle, fn) {
  const [h, w] = rle.size;
  const counts = typeof rle.counts === "string" ? stringToCounts(rle.counts) : rle.counts;
  let pos = 0;
  for (let i = 0; i < counts.length; i++) {
    const n = counts[i];
    if (i % 2 === 1) {
      for (let p = pos; p < pos + n; p++) {
        const x = Math.floor(p / h);
        fn((p - x * h) * w + x);
      }
    }
    pos += n;
  }
}

/** Pixels inside an RLE's mask. */
export function area(rle) {
  const counts = typeof rle.counts === "string" ? stringToCounts(rle.counts) : rle.counts;
  let total = 0;
  for (let i = 1; i < counts.length; i += 2) total += counts[i];
  return total;
}
