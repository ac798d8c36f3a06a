/**
 * The AMI catalogue moto loads from `MOTO_AMIS_PATH` (a JSON list in the shape of moto's own
 * `ec2/resources/amis.json`: `ami_id`, `name`, `owner_id`, `architecture`, `creation_date`, ...).
 * Stock moto ships no Debian image, and our adapter's default image is "the newest official
 * Debian 12 image" (providers/ec2/adapter.ts `#latestDebian`: Owners [136693071363], name
 * `debian-12-<amd64|arm64>-*`, architecture, state available, newest CreationDate).
 *
 * Names follow Debian's real ones (`debian-12-amd64-20240717-1811`). Decoys make the look-up
 * prove its filters: an older build (newest wins), Debian 11 (name filter), an image named like
 * Debian's but owned by someone else and newer (owner filter), and a deprecated-state one.
 */

/** The account Debian publishes its official AMIs from. */
export const DEBIAN_OWNER = '136693071363';

export interface MotoAmi {
  ami_id: string;
  name: string;
  description: string;
  owner_id: string;
  architecture: 'x86_64' | 'arm64';
  creation_date: string;
  state: string;
  public: boolean;
  image_type: 'machine';
  root_device_type: 'ebs';
  root_device_name: string;
  virtualization_type: 'hvm';
  hypervisor: 'xen';
  sriov: 'simple';
  image_location: string;
  boot_mode: string;
}

function ami(id: string, name: string, arch: MotoAmi['architecture'], created: string, owner = DEBIAN_OWNER, state = 'available'): MotoAmi {
  return {
    ami_id: id,
    name,
    description: `${name.startsWith('debian-11') ? 'Debian 11' : 'Debian 12'} (${name.split('-').slice(3).join('-')})`,
    owner_id: owner,
    architecture: arch,
    creation_date: created,
    state,
    public: true,
    image_type: 'machine',
    root_device_type: 'ebs',
    root_device_name: '/dev/xvda',
    virtualization_type: 'hvm',
    hypervisor: 'xen',
    sriov: 'simple',
    image_location: `${owner}/${name}`,
    boot_mode: arch === 'arm64' ? 'uefi' : 'uefi-preferred',
  };
}

/** What the default look-up must find, per architecture. */
export const NEWEST_DEBIAN = {
  x86_64: ami('ami-0d1e5b6a7c8f90a12', 'debian-12-amd64-20240717-1811', 'x86_64', '2024-07-17T18:15:02.000Z'),
  arm64: ami('ami-0a9b8c7d6e5f40312', 'debian-12-arm64-20240717-1811', 'arm64', '2024-07-17T18:16:40.000Z'),
} as const;

/** The whole catalogue moto gets. */
export function debianCatalogue(): MotoAmi[] {
  return [
    ami('ami-0b2c3d4e5f6a70812', 'debian-12-amd64-20240507-1740', 'x86_64', '2024-05-07T17:44:11.000Z'),
    NEWEST_DEBIAN.x86_64,
    ami('ami-0c3d4e5f6a7b80912', 'debian-12-arm64-20240507-1740', 'arm64', '2024-05-07T17:45:30.000Z'),
    NEWEST_DEBIAN.arm64,
    // Newer, but Debian 11: the name filter leaves it out.
    ami('ami-0e4f5a6b7c8d90a13', 'debian-11-amd64-20240801-1830', 'x86_64', '2024-08-01T18:33:00.000Z'),
    // Named like Debian's and newer, but not Debian's account: the owner filter leaves it out.
    ami('ami-0f5a6b7c8d9e0a114', 'debian-12-amd64-20241201-0000', 'x86_64', '2024-12-01T00:00:00.000Z', '999999999999'),
    // Newer, but still pending: the state filter leaves it out.
    ami('ami-0a6b7c8d9e0f1a215', 'debian-12-amd64-20240901-1200', 'x86_64', '2024-09-01T12:00:00.000Z', DEBIAN_OWNER, 'pending'),
  ];
}
