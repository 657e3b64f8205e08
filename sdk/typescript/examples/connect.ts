/**
 * How the examples connect: `PLANTD_URL` and either `PLANTD_TOKEN` (a
 * service-account token) or `PLANTD_EMAIL` + `PLANTD_PASSWORD`.
 */
import { Plantd } from '@plantd/client';

/** A client from the environment. */
export async function connect(): Promise<Plantd> {
  const url = process.env.PLANTD_URL ?? 'http://127.0.0.1:8080';
  const token = process.env.PLANTD_TOKEN;
  if (token) return Plantd.withToken(url, token);
  const email = process.env.PLANTD_EMAIL;
  const password = process.env.PLANTD_PASSWORD;
  if (!email || !password) throw new Error('set PLANTD_TOKEN, or PLANTD_EMAIL and PLANTD_PASSWORD');
  return Plantd.login(url, email, password);
}

/** `--name value` from the command line, or `fallback`. */
export function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? process.argv[i + 1] : fallback;
  if (value === undefined) throw new Error(`--${name} is required`);
  return value;
}

/** Whether `--name` is on the command line. */
export function flag(name: string): boolean {
  return process.argv.includes(`--${name}`);
}
