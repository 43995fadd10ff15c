export interface Version {
  major: number;
  minor: number;
  patch: number;
  prerelease: string[];
}

export type Bump = 'major' | 'minor' | 'patch';

const PATTERN = /^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?$/;

export function parse(text: string): Version {
  const m = PATTERN.exec(text.trim());
  if (!m) {
    throw new Error(`not a semantic version: ${JSON.stringify(text)}`);
  }
  return {
    major: Number(m[1]),
    minor: Number(m[2]),
    patch: Number(m[3]),
    prerelease: m[4] ? m[4].split('.') : [],
  };
}

export function format(v: Version): string {
  const core = `${v.major}.${v.minor}.${v.patch}`;
  return v.prerelease.length ? `${core}-${v.prerelease.join('.')}` : core;
}

function compareIdent(a: string, b: string): number {
  const na = /^\d+$/.test(a);
  const nb = /^\d+$/.test(b);
  if (na && nb) return Number(a) - Number(b);
  if (na) return -1;
  if (nb) return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

export function compare(a: Version, b: Version): number {
  for (const key of ['major', 'minor', 'patch'] as const) {
    if (a[key] !== b[key]) return Math.sign(a[key] - b[key]);
  }
  if (!a.prerelease.length || !b.prerelease.length) {
    return Math.sign(b.prerelease.length - a.prerelease.length);
  }
  const n = Math.min(a.prerelease.length, b.prerelease.length);
  for (let i = 0; i < n; i++) {
    const c = compareIdent(a.prerelease[i], b.prerelease[i]);
    if (c !== 0) return Math.sign(c);
  }
  return Math.sign(a.prerelease.length - b.prerelease.length);
}

export function bump(v: Version, kind: Bump): Version {
  switch (kind) {
    case 'major':
      return { major: v.major + 1, minor: 0, patch: 0, prerelease: [] };
    case 'minor':
      return { major: v.major, minor: v.minor + 1, patch: 0, prerelease: [] };
    case 'patch':
      return { major: v.major, minor: v.minor, patch: v.patch + 1, prerelease: [] };
  }
}

export function maxSatisfying(versions: string[], floor: string): string | undefined {
  const min = parse(floor);
  return versions
    .map(parse)
    .filter((v) => compare(v, min) >= 0)
    .sort(compare)
    .map(format)
    .pop();
}
