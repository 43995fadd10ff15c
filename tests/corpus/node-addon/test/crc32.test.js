const test = require('node:test');
const assert = require('node:assert');
const { crc32 } = require('..');

test('known vectors', () => {
  assert.strictEqual(crc32(''), 0);
  assert.strictEqual(crc32('123456789'), 0xcbf43926);
  assert.strictEqual(crc32('The quick brown fox jumps over the lazy dog'), 0x414fa339);
});

test('streaming with a seed equals one pass', () => {
  const whole = crc32('hello, world');
  assert.strictEqual(crc32(', world', crc32('hello')), whole);
});

test('rejects non-buffers from the native side', () => {
  const addon = require('bindings')('crc32');
  assert.throws(() => addon.crc32('x'), TypeError);
});
