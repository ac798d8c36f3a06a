/**
 * TLS pieces the provider tests share: a user's own material with a distinct certificate per
 * role, and what a TLS server actually presents to a client.
 */
import { X509Certificate } from 'node:crypto';
import * as tls from 'node:tls';
import { Security } from '../../src/security/security';
import { createCa, issueLeaf, validityWindow, type MintedCa, type MintedLeaf } from '../../src/security/generate';

/** One CA and a distinct leaf per role, loaded as a user would with `Security.fromPem` (encryption required). */
export async function userSecurity(clusterName?: string): Promise<{
  security: Security;
  ca: MintedCa;
  scheduler: MintedLeaf;
  worker: MintedLeaf;
  client: MintedLeaf;
}> {
  const opts = { keyAlgorithm: 'ecdsa-p256' as const, validity: validityWindow(1, 5), ...(clusterName ? { clusterName } : {}) };
  const ca = await createCa(opts);
  const [scheduler, worker, client] = await Promise.all([issueLeaf(ca, 'scheduler', opts), issueLeaf(ca, 'worker', opts), issueLeaf(ca, 'client', opts)]);
  const security = Security.fromPem({
    tlsCa: ca.certPem,
    tlsSchedulerCert: scheduler.certPem,
    tlsSchedulerKey: scheduler.keyPem,
    tlsWorkerCert: worker.certPem,
    tlsWorkerKey: worker.keyPem,
    tlsClientCert: client.certPem,
    tlsClientKey: client.keyPem,
    requireEncryption: true,
  });
  return { security, ca, scheduler, worker, client };
}

/**
 * The certificate the TLS server at `host:port` presents to a client holding `options`, and the
 * protocol they agreed. Host names are not checked: Dask's trust boundary is the cluster CA.
 */
export function presentedCertificate(host: string, port: number, options: tls.ConnectionOptions): Promise<{ cert: X509Certificate; protocol: string | null }> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host, port, ...options, checkServerIdentity: () => undefined }, () => {
      const cert = new X509Certificate(sock.getPeerCertificate().raw);
      const protocol = sock.getProtocol();
      sock.destroy();
      resolve({ cert, protocol });
    });
    sock.on('error', reject);
  });
}
