/**
 * Text cleaning, one pure function per step so each is tested on its own. `cleanText` applies them in order:
 * markup stripping (optional), Unicode NFC, control characters, whitespace, lowercasing (optional).
 */

export interface CleanOptions {
  lowercase: boolean;
  stripMarkup: boolean;
}

export const DEFAULT_CLEAN: CleanOptions = { lowercase: false, stripMarkup: false };

/** Unicode canonical composition: "e" + combining acute and "é" become the same code point. */
export function normalizeUnicode(text: string): string {
  return text.normalize('NFC');
}

/**
 * Drops control characters (C0, DEL, C1) except tab and newline, and the zero-width/bidi format characters
 * that hide in scraped text; carriage returns become newlines.
 */
export function removeControlCharacters(text: string): string {
  return text
    .replace(/\r\n?/g, '\n')
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/g, '')
    .replace(/[\u200B-\u200D\u2060\uFEFF\u202A-\u202E\u2066-\u2069]/g, '');
}

/**
 * Whitespace: other Unicode spaces become a plain space, tabs and runs of spaces one space, trailing spaces
 * go, and more than one blank line collapses to one (paragraph breaks survive).
 */
export function normalizeWhitespace(text: string): string {
  return text
    .replace(/[\u00A0\u1680\u2000-\u200A\u202F\u205F\u3000\t]/g, ' ')
    .replace(/ {2,}/g, ' ')
    .replace(/ *\n */g, '\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ' };

/**
 * Strips HTML/XML tags (with script/style bodies and comments), decodes common entities, and removes Markdown
 * syntax that is not prose: code fences, images, link targets, heading/quote/list markers, emphasis marks.
 */
export function stripMarkup(text: string): string {
  return text
    .replace(/<!--[\s\S]*?-->/g, '')
    .replace(/<(script|style)\b[^>]*>[\s\S]*?<\/\1>/gi, '')
    .replace(/<\/?(p|div|br|li|h[1-6]|tr|section|article)\b[^>]*>/gi, '\n')
    .replace(/<[^>\n]+>/g, '')
    .replace(/&(#\d+|#x[0-9a-f]+|[a-z]+);/gi, (m, e: string) => {
      if (e[0] === '#') {
        const code = e[1].toLowerCase() === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
        return Number.isFinite(code) && code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : m;
      }
      return ENTITIES[e.toLowerCase()] ?? m;
    })
    .replace(/^```[^\n]*\n[\s\S]*?^```[ \t]*$/gm, '')
    .replace(/!\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/\[([^\]]+)\]\([^)]*\)/g, '$1')
    .replace(/^[ \t]{0,3}(#{1,6}|>+|[-*+]|\d+[.)])[ \t]+/gm, '')
    .replace(/(\*\*|__|\*|_|`)(?=\S)([^\n]*?\S)\1/g, '$2');
}

export function cleanText(text: string, o: CleanOptions = DEFAULT_CLEAN): string {
  let t = o.stripMarkup ? stripMarkup(text) : text;
  t = normalizeWhitespace(removeControlCharacters(normalizeUnicode(t)));
  return o.lowercase ? t.toLowerCase() : t;
}
