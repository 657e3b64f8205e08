// Small shared pieces: loading/error states, times, a confirmation dialog.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef } from 'preact/hooks';
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
