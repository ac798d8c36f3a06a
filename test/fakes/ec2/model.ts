/**
 * The EC2 fake's resources as it stores them (what `fake.resources()` / `fake.instance(id)` show),
 * and the request shapes it reads from `req.normalized` (EC2 wire names, typed by the contract).
 */
import type { IpAllocator } from '../core';
import type { Architecture, InstanceStateName } from './catalog';
import type { Ec2Tag, FilterInput } from './filters';

export type { Ec2Tag } from './filters';

export interface Ec2Vpc {
  vpcId: string;
  cidrBlock: string;
  cidrAssociationId: string;
  dhcpOptionsId: string;
  isDefault: boolean;
  tags: Ec2Tag[];
}

export interface Ec2Subnet {
  subnetId: string;
  vpcId: string;
  cidrBlock: string;
  availabilityZone: string;
  availabilityZoneId: string;
  defaultForAz: boolean;
  mapPublicIpOnLaunch: boolean;
  tags: Ec2Tag[];
  /** Addresses of this subnet (the first four and the last are reserved, as on AWS). */
  readonly addresses: IpAllocator;
}

/** One security group rule, flat: one protocol/port range and one source (CIDR or group). */
export interface Ec2SgRule {
  ruleId: string;
  /** `tcp`, `udp`, `icmp`, `icmpv6`, `-1` (all) or another IP protocol number. */
  protocol: string;
  fromPort?: number;
  toPort?: number;
  cidr?: string;
  groupId?: string;
  description?: string;
  tags: Ec2Tag[];
}

export interface Ec2SecurityGroup {
  groupId: string;
  groupName: string;
  description: string;
  vpcId: string;
  ownerId: string;
  /** The VPC's `default` group: cannot be deleted, not a leak. */
  isDefault: boolean;
  tags: Ec2Tag[];
  ingress: Ec2SgRule[];
  egress: Ec2SgRule[];
}

export interface Ec2Volume {
  volumeId: string;
  sizeGb: number;
  volumeType: string;
  deviceName: string;
  deleteOnTermination: boolean;
  encrypted: boolean;
  state: 'in-use' | 'available';
  /** Attached instance (undefined once detached by termination). */
  instanceId?: string;
  attachTime: number;
  tags: Ec2Tag[];
}

export interface Ec2MetadataOptions {
  httpTokens: 'optional' | 'required';
  httpEndpoint: 'enabled' | 'disabled';
  httpPutResponseHopLimit: number;
  httpProtocolIpv6: 'enabled' | 'disabled';
  instanceMetadataTags: 'enabled' | 'disabled';
}

export interface Ec2Instance {
  instanceId: string;
  reservationId: string;
  imageId: string;
  instanceType: string;
  architecture: Architecture;
  keyName?: string;
  launchTime: number;
  amiLaunchIndex: number;
  availabilityZone: string;
  subnetId: string;
  vpcId: string;
  /** Assigned at launch (in the RunInstances answer), released on termination. */
  privateIpAddress: string;
  /** Assigned on entering `running` when `associatePublicIp`; released on stop / termination. */
  publicIpAddress?: string;
  /** From the network interface's `AssociatePublicIpAddress`, else the subnet's `mapPublicIpOnLaunch`. */
  associatePublicIp: boolean;
  securityGroupIds: string[];
  tags: Ec2Tag[];
  /** Decoded user-data bytes (what the VM sees). */
  userData: Buffer;
  clientToken?: string;
  metadataOptions: Ec2MetadataOptions;
  /** What a shutdown from inside the VM does. EC2's default is `stop`. */
  instanceInitiatedShutdownBehavior: 'stop' | 'terminate';
  disableApiTermination: boolean;
  iamInstanceProfile?: { arn: string; id: string };
  ebsOptimized: boolean;
  monitoring: 'enabled' | 'disabled';
  spot?: { spotInstanceRequestId: string; maxPrice?: string; spotInstanceType: string; interruptionBehavior: string };
  rootDeviceName: string;
  volumeIds: string[];
  networkInterfaceId: string;
  attachmentId: string;
  macAddress: string;
  state: InstanceStateName;
  stateReason?: { code: string; message: string };
  stateTransitionReason: string;
  runningSince?: number;
  terminatedAt?: number;
  /** Eventual consistency: unknown by id before this time. */
  visibleAt: number;
  /**
   * What GetConsoleOutput returns without `Latest`: the buffer EC2 posts shortly after a state
   * transition (running, stopping, shutting-down), not the live console.
   */
  postedConsole: string;
}

/** One route of a route table (IPv4 destinations only). */
export interface Ec2Route {
  destinationCidrBlock: string;
  /** `local` or an internet gateway `igw-...`. */
  gatewayId?: string;
  natGatewayId?: string;
  /** A NAT instance. */
  instanceId?: string;
  networkInterfaceId?: string;
  /** `blackhole` when the target is gone (e.g. a deleted NAT gateway). */
  state: 'active' | 'blackhole';
}

export interface Ec2RouteTable {
  routeTableId: string;
  vpcId: string;
  /** The VPC's main table: used by every subnet without an explicit association. */
  main: boolean;
  /** Explicitly associated subnets. */
  subnetIds: string[];
  routes: Ec2Route[];
  tags: Ec2Tag[];
}

// ---------------------------------------------------------------------------------------------
// Request shapes (`req.normalized`: wire names, typed by the contract)

export interface TagSpecInput {
  ResourceType?: string;
  Tag?: { Key?: string; Value?: string }[];
}

export interface RunInstancesInput {
  ImageId?: string;
  InstanceType?: string;
  MinCount: number;
  MaxCount: number;
  KeyName?: string;
  UserData?: string;
  ClientToken?: string;
  SecurityGroupId?: string[];
  SecurityGroup?: string[];
  SubnetId?: string;
  PrivateIpAddress?: string;
  Placement?: { AvailabilityZone?: string; Tenancy?: string };
  NetworkInterface?: {
    DeviceIndex?: number;
    AssociatePublicIpAddress?: boolean;
    SubnetId?: string;
    SecurityGroupId?: string[];
    DeleteOnTermination?: boolean;
    PrivateIpAddress?: string;
    NetworkInterfaceId?: string;
  }[];
  MetadataOptions?: { HttpTokens?: 'optional' | 'required'; HttpEndpoint?: 'enabled' | 'disabled'; HttpPutResponseHopLimit?: number; HttpProtocolIpv6?: 'enabled' | 'disabled'; InstanceMetadataTags?: 'enabled' | 'disabled' };
  InstanceInitiatedShutdownBehavior?: 'stop' | 'terminate';
  DisableApiTermination?: boolean;
  IamInstanceProfile?: { Arn?: string; Name?: string };
  BlockDeviceMapping?: { DeviceName?: string; VirtualName?: string; NoDevice?: string; Ebs?: { VolumeSize?: number; VolumeType?: string; DeleteOnTermination?: boolean; Encrypted?: boolean; SnapshotId?: string } }[];
  InstanceMarketOptions?: { MarketType?: 'spot'; SpotOptions?: { MaxPrice?: string; SpotInstanceType?: string; InstanceInterruptionBehavior?: string } };
  TagSpecification?: TagSpecInput[];
  Monitoring?: { Enabled?: boolean };
  EbsOptimized?: boolean;
  LaunchTemplate?: unknown;
}

export interface IpPermissionInput {
  IpProtocol?: string;
  FromPort?: number;
  ToPort?: number;
  IpRanges?: { CidrIp?: string; Description?: string }[];
  Ipv6Ranges?: unknown[];
  PrefixListIds?: unknown[];
  Groups?: { GroupId?: string; GroupName?: string; Description?: string; UserId?: string }[];
}

export interface SgIngressInput {
  GroupId?: string;
  GroupName?: string;
  IpPermissions?: IpPermissionInput[];
  IpProtocol?: string;
  FromPort?: number;
  ToPort?: number;
  CidrIp?: string;
  SourceSecurityGroupName?: string;
  SecurityGroupRuleId?: string[];
  TagSpecification?: TagSpecInput[];
}

export interface DescribeInput {
  Filter?: FilterInput[];
  MaxResults?: number;
  NextToken?: string;
}
