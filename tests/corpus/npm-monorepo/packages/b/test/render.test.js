const test = require('node:test');
const assert = require('node:assert');
const { render, summary } = require('../dist/index.js');

const entries = [
  { version: '1.0.0', date: '2024-01-02', changes: ['First release'] },
  { version: '1.1.0', date: '2024-03-04', changes: ['Add render()', 'Fix anchors'] },
];

test('render puts the newest first with slug anchors', () => {
  const md = render(entries);
  assert.ok(md.indexOf('1.1.0') < md.indexOf('1.0.0'));
  assert.match(md, /<a id="1-1-0-2024-03-04"><\/a>/);
  assert.match(md, /- Fix anchors/);
});

test('summary counts changes', () => {
  assert.match(summary(entries), /2.*releases, 3 changes/);
});
