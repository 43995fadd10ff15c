import { bump, compare, format, maxSatisfying, parse } from '../src/index';

describe('parse/format', () => {
  it('round-trips', () => {
    for (const v of ['0.0.1', '1.2.3', '10.20.30-rc.1', '2.0.0-alpha.beta']) {
      expect(format(parse(v))).toBe(v);
    }
  });
  it('accepts a leading v', () => {
    expect(parse('v3.1.4')).toEqual({ major: 3, minor: 1, patch: 4, prerelease: [] });
  });
  it('rejects garbage', () => {
    expect(() => parse('1.2')).toThrow(/not a semantic version/);
    expect(() => parse('01.2.3')).toThrow();
  });
});

describe('compare', () => {
  const order = ['1.0.0-alpha', '1.0.0-alpha.1', '1.0.0-alpha.beta', '1.0.0-beta', '1.0.0-beta.2', '1.0.0-beta.11', '1.0.0-rc.1', '1.0.0'];
  it('follows the semver precedence rules', () => {
    const shuffled = [...order].reverse().map(parse);
    expect(shuffled.sort(compare).map(format)).toEqual(order);
  });
});

describe('bump', () => {
  it.each([
    ['major', '2.0.0'],
    ['minor', '1.5.0'],
    ['patch', '1.4.8'],
  ] as const)('%s', (kind, want) => {
    expect(format(bump(parse('1.4.7-rc.1'), kind))).toBe(want);
  });
});

describe('maxSatisfying', () => {
  it('picks the newest at or above the floor', () => {
    expect(maxSatisfying(['1.0.0', '1.9.0', '1.10.0', '0.9.9'], '1.0.0')).toBe('1.10.0');
    expect(maxSatisfying(['0.1.0'], '1.0.0')).toBeUndefined();
  });
});
