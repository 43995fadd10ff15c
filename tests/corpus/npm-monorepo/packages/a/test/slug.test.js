const test = require('node:test');
const assert = require('node:assert');
const { slugify } = require('../dist/index.js');

test('slugify', () => {
  assert.strictEqual(slugify('Hello, World!'), 'hello-world');
  assert.strictEqual(slugify('  Crème brûlée  '), 'creme-brulee');
  assert.strictEqual(slugify('a.b.c', '.'), 'a.b.c');
  assert.strictEqual(slugify('--x--'), 'x');
});
