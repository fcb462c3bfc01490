import { describe, expect, it } from 'vitest';
import { cleanText, normalizeUnicode, normalizeWhitespace, removeControlCharacters, stripMarkup } from '../../engine/data/clean.ts';
import { assignSplit, textHash32 } from '../../engine/data/split.ts';

describe('cleaning steps', () => {
  it('NFC joins combining marks', () => {
    expect(normalizeUnicode('cafe\u0301')).toBe('caf\u00e9');
    expect(normalizeUnicode('caf\u00e9')).toBe('caf\u00e9');
  });
  it('removes control and invisible format characters, keeps tabs and newlines, converts CR', () => {
    expect(removeControlCharacters('a\u0000b\u0007c\u001bd\u007fe\u0085f')).toBe('abcdef');
    expect(removeControlCharacters('x\u200by\ufeffz\u202e!')).toBe('xyz!');
    expect(removeControlCharacters('line1\r\nline2\rline3\tend')).toBe('line1\nline2\nline3\tend');
  });
  it('normalizes whitespace but keeps paragraph breaks', () => {
    expect(normalizeWhitespace('  a \t b\u00a0\u00a0c  \n\n\n\n  d  ')).toBe('a b c\n\nd');
    expect(normalizeWhitespace('one\ntwo')).toBe('one\ntwo');
  });
  it('strips HTML and Markdown, decoding entities', () => {
    expect(stripMarkup('<p>Hello <b>big</b> &amp; <i>bold</i> world&#33;</p><script>x()</script>')).toBe('\nHello big & bold world!\n');
    expect(stripMarkup('# Title\n\nSee [the docs](http://x.y) and ![alt text](i.png).\n\n> quoted\n- item **strong** and `code`')).toBe(
      'Title\n\nSee the docs and alt text.\n\nquoted\nitem strong and code',
    );
    expect(stripMarkup('```js\nconst x = 1;\n```\nafter')).toBe('\nafter');
  });
  it('cleanText applies the steps in order, with optional lowercasing', () => {
    expect(cleanText('  <b>Caf\u0065\u0301</b>\u0000  OK \r\n', { lowercase: true, stripMarkup: true })).toBe('caf\u00e9 ok');
    expect(cleanText('<b>kept</b>', { lowercase: false, stripMarkup: false })).toBe('<b>kept</b>');
  });
});

describe('document split', () => {
  it('is deterministic and near the requested fraction', () => {
    const docs = Array.from({ length: 4000 }, (_, i) => `document number ${i} with some text`);
    const val = docs.filter((d) => assignSplit(d, 0.1) === 'val').length;
    expect(val / docs.length).toBeGreaterThan(0.08);
    expect(val / docs.length).toBeLessThan(0.12);
    expect(docs.map((d) => assignSplit(d, 0.1))).toEqual(docs.map((d) => assignSplit(d, 0.1)));
    expect(textHash32('abc')).toBe(textHash32('abc'));
    expect(textHash32('abc')).not.toBe(textHash32('abd'));
  });
});
