'use strict';
const addon = require('bindings')('crc32');

/** CRC-32 of a Buffer or string (UTF-8), optionally continuing from `seed`. */
function crc32(data, seed = 0) {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(String(data), 'utf8');
  return addon.crc32(buf, seed);
}

module.exports = { crc32 };
