import escapeStringRegexp from 'escape-string-regexp';

/** Lower-cases `text` and joins its words with `sep`. */
export function slugify(text: string, sep = '-'): string {
  const collapse = new RegExp(`${escapeStringRegexp(sep)}+`, 'g');
  return text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, sep)
    .replace(collapse, sep)
    .replace(new RegExp(`^${escapeStringRegexp(sep)}|${escapeStringRegexp(sep)}$`, 'g'), '');
}
