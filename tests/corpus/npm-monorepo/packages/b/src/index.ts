import { slugify } from '@acme/slug';
import pc from 'picocolors';

export interface Entry {
  version: string;
  date: string;
  changes: string[];
}

/** Renders entries as Markdown, newest first, each heading with a stable anchor. */
export function render(entries: Entry[]): string {
  return [...entries]
    .sort((x, y) => (x.date < y.date ? 1 : -1))
    .map((e) => {
      const anchor = slugify(`${e.version} ${e.date}`);
      const items = e.changes.map((c) => `- ${c}`).join('\n');
      return `## <a id="${anchor}"></a>${e.version} (${e.date})\n\n${items}\n`;
    })
    .join('\n');
}

export function summary(entries: Entry[]): string {
  const n = entries.reduce((acc, e) => acc + e.changes.length, 0);
  return `${pc.bold(String(entries.length))} releases, ${n} changes`;
}
