/**
 * Every failure the SDK reports is a {@link PlantdError}: the HTTP status
 * (0 when no answer came), the API's `error` code (`not_found`,
 * `forbidden`, `conflict`, …, or `network` / `timeout` / `refused` from the
 * SDK itself) and its human message.
 */
export class PlantdError extends Error {
  /** HTTP status, or 0 when the server never answered. */
  readonly status: number;
  /** The API's `error` field, or the SDK's own code. */
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'PlantdError';
    this.status = status;
    this.code = code;
  }

  /** From a failed response: its `{error, message}` body when it has one. */
  static async fromResponse(response: Response): Promise<PlantdError> {
    let code = `http_${response.status}`;
    let message = response.statusText || `HTTP ${response.status}`;
    try {
      const body = (await response.clone().json()) as { error?: unknown; message?: unknown };
      if (typeof body.error === 'string') code = body.error;
      if (typeof body.message === 'string') message = body.message;
    } catch {
      // Not JSON: keep the status line.
    }
    return new PlantdError(response.status, code, message);
  }
}

/**
 * A live subscription (or the whole connection) was refused for good: the
 * token is invalid, expired without a way to renew it, or revoked. Streams
 * end with this instead of reconnecting forever.
 */
export class RefusedError extends PlantdError {
  constructor(message: string) {
    super(401, 'refused', message);
    this.name = 'RefusedError';
  }
}
