// Small shared pieces: loading/error states, times, a confirmation dialog.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './session';

/** What a failed request means for a person. */
export function explain(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.status === 403) return `Not allowed: ${e.message}`;
    if (e.status === 503) return `Not available here: ${e.message}`;
    return e.message;
  }
  return e instanceof Error ? e.message : String(e);
}

export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  return (
    <p class="error" role="alert">
      {explain(error)}
    </p>
  );
}

/** A time (ms or RFC 3339) in local time. */
export function when(t: number | string | undefined | null): string {
  if (t === undefined || t === null || t === '') return '—';
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
}

/** A modal dialog (native <dialog>: focus trapped, Escape closes). */
export function Modal(props: { open: boolean; title: string; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (props.open && !d.open) d.showModal();
    if (!props.open && d.open) d.close();
  }, [props.open]);
  return (
    <dialog ref={ref} onClose={props.onClose} aria-label={props.title}>
      <h2>{props.title}</h2>
      {props.children}
    </dialog>
  );
}

/**
 * A button copying `text` to the clipboard (the Clipboard API where the
 * page is a secure context, else a selected hidden textarea), saying
 * "Copied" for a moment.
 */
export function CopyButton(props: { text: string; label?: string }) {
  const [done, setDone] = useState(false);
  async function copy() {
    try {
      await navigator.clipboard.writeText(props.text);
    } catch {
      const t = document.createElement('textarea');
      t.value = props.text;
      document.body.append(t);
      t.select();
      document.execCommand('copy');
      t.remove();
    }
    setDone(true);
    setTimeout(() => setDone(false), 1500);
  }
  return (
    <button type="button" onClick={copy} aria-label={props.label ?? 'Copy'}>
      {done ? 'Copied ✓' : (props.label ?? 'Copy')}
    </button>
  );
}

/**
 * Runs actions one at a time: clears the error first, hands a failure to
 * `setError`; `busy` while one runs (for disabling its button).
 */
export function useAction(setError: (e: unknown) => void): [(f: () => Promise<void>) => Promise<void>, boolean] {
  const [busy, setBusy] = useState(false);
  const run = async (f: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await f();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return [run, busy];
}

/** The permission-denied line shown instead of a page or a control. */
export function Lacks(props: { what: string; perm: string }) {
  return (
    <p class="muted" data-testid="lacks">
      Your roles cannot {props.what} (that takes <code>{props.perm}</code>).
    </p>
  );
}
