/** The EC2 fake's error shapes, throttling, fault injection and contract checks. */
import { DescribeInstancesCommand, DescribeVpcsCommand, RunInstancesCommand } from '@aws-sdk/client-ec2';
import { afterEach, describe, expect, it } from 'vitest';
import { ContractViolationError, ManualClock, assertNoContractViolations } from '../core';
import { raw } from '../core/http';
import { DEBIAN_12, Harness, caught } from './test-helpers';

const h = new Harness();
afterEach(() => h.teardown());

const launch = (n = 1, min = n) => new RunInstancesCommand({ ImageId: DEBIAN_12, InstanceType: 't3.small', MinCount: min, MaxCount: n });

describe('FakeEc2 errors', () => {
  it('answers in EC2 error XML that the SDK turns into named errors', async () => {
    const { fake, client } = await h.start();
    const res = await raw(fake.endpoint, { form: { Action: 'DescribeInstances', Version: '2016-11-15', 'InstanceId.1': 'i-0123456789abcdef0' } });
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe('text/xml;charset=UTF-8');
    expect(res.text).toMatch(
      /^<\?xml version="1.0" encoding="UTF-8"\?>\n<Response><Errors><Error><Code>InvalidInstanceID.NotFound<\/Code><Message>The instance ID &apos;i-0123456789abcdef0&apos; does not exist<\/Message><\/Error><\/Errors><RequestID>[0-9a-f-]{36}<\/RequestID><\/Response>$/,
    );

    const err = await caught(() => client.send(new DescribeInstancesCommand({ InstanceIds: ['i-0123456789abcdef0'] })));
    expect(err.name).toBe('InvalidInstanceID.NotFound');
    expect(err.message).toBe("The instance ID 'i-0123456789abcdef0' does not exist");
    expect(err.$metadata?.httpStatusCode).toBe(400);
    expect(err.$fault).toBe('client');

    const ok = await raw(fake.endpoint, { form: { Action: 'DescribeVpcs', Version: '2016-11-15' } });
    expect(ok.text).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<DescribeVpcsResponse xmlns="http:\/\/ec2.amazonaws.com\/doc\/2016-11-15\/"><requestId>[0-9a-f-]{36}<\/requestId><vpcSet><item><vpcId>vpc-/);
  });

  it('answers DryRun with DryRunOperation (412)', async () => {
    const { fake, client } = await h.start();
    const err = await caught(() => client.send(new RunInstancesCommand({ ImageId: DEBIAN_12, InstanceType: 't3.small', MinCount: 1, MaxCount: 1, DryRun: true })));
    expect([err.name, err.$metadata?.httpStatusCode]).toEqual(['DryRunOperation', 412]);
    expect(fake.instances()).toEqual([]);
  });

  it('throttles RunInstances by instances launched (burst, then a refill) with RequestLimitExceeded', async () => {
    const clock = new ManualClock();
    const { fake, client } = await h.start({ clock, runInstancesRate: { burst: 4, perSecond: 2 } });
    expect((await client.send(launch(4))).Instances).toHaveLength(4);
    const err = await caught(() => client.send(launch(1)));
    expect([err.name, err.message, err.$metadata?.httpStatusCode, err.$fault]).toEqual(['RequestLimitExceeded', 'Request limit exceeded.', 503, 'server']);
    await clock.advance(500);
    expect((await client.send(launch(1))).Instances).toHaveLength(1);
    await clock.advance(1_000);
    // Two tokens back: MaxCount 5 / MinCount 1 launches what the bucket allows.
    expect((await client.send(launch(5, 1))).Instances).toHaveLength(2);
    expect((await caught(() => client.send(launch(1)))).name).toBe('RequestLimitExceeded');
    expect(fake.instances()).toHaveLength(7);
  });

  it('applies a general API token bucket when asked', async () => {
    const clock = new ManualClock();
    const { fake, client } = await h.start({ clock });
    const handle = fake.throttle({ burst: 2, perSecond: 1 });
    await client.send(new DescribeVpcsCommand({}));
    await client.send(new DescribeInstancesCommand({}));
    const err = await caught(() => client.send(new DescribeVpcsCommand({})));
    expect([err.name, err.$metadata?.httpStatusCode]).toEqual(['RequestLimitExceeded', 503]);
    expect(fake.server.received.at(-1)).toMatchObject({ operation: 'DescribeVpcs', rejectedBy: 'throttle', status: 503 });
    await clock.advance(1_000);
    await client.send(new DescribeVpcsCommand({}));
    handle.remove();
    for (let i = 0; i < 3; i++) await client.send(new DescribeVpcsCommand({}));
  });

  it('injects faults shaped as EC2 errors, which the SDK retries when they are transient', async () => {
    const { fake, client } = await h.start({}, { maxAttempts: 3 });
    fake.faults.fail('RunInstances', { status: 500, code: 'InternalError', message: 'An internal error has occurred' }, { times: 1 });
    fake.faults.fail('DescribeVpcs', { status: 400, code: 'UnauthorizedOperation', message: 'You are not authorized to perform this operation.' }, { nth: 1 });
    // The SDK retries the 500 and the second attempt launches.
    const out = await client.send(launch(1));
    expect(out.Instances).toHaveLength(1);
    expect(fake.server.calls('RunInstances').map((c) => c.status)).toEqual([500, 200]);
    expect(fake.instances()).toHaveLength(1);
    const err = await caught(() => client.send(new DescribeVpcsCommand({})));
    expect([err.name, err.$metadata?.httpStatusCode, err.$metadata?.attempts]).toEqual(['UnauthorizedOperation', 400, 1]);
  });

  it('rejects requests that break the published contract, in EC2 terms', async () => {
    const { fake, client } = await h.start();
    const err = await caught(() => client.send(new RunInstancesCommand({ ImageId: DEBIAN_12 } as never)));
    expect(err.name).toBe('MissingParameter');
    expect(err.message).toMatch(/^The request must contain the parameter (MinCount|MaxCount)$/);
    expect(fake.instances()).toEqual([]);

    const unknown = await raw(fake.endpoint, { form: { Action: 'DescribeVpcs', Version: '2016-11-15', Colour: 'red' } });
    expect(unknown.status).toBe(400);
    expect(unknown.text).toContain('<Code>UnknownParameter</Code>');
    const action = await raw(fake.endpoint, { form: { Action: 'LaunchRocket', Version: '2016-11-15' } });
    expect(action.text).toContain('<Code>InvalidAction</Code>');
    const version = await raw(fake.endpoint, { form: { Action: 'DescribeVpcs', Version: '2014-01-01' } });
    expect(version.text).toContain('<Code>NoSuchVersion</Code>');
    const flat = await raw(fake.endpoint, { form: { Action: 'TerminateInstances', Version: '2016-11-15', InstanceId: 'i-0123456789abcdef0' } });
    expect(flat.text).toContain('<Code>InvalidParameterValue</Code>');

    expect(fake.server.calls().every((c) => c.rejectedBy === 'contract')).toBe(true);
    expect(() => assertNoContractViolations(fake)).toThrow(ContractViolationError);
    expect(fake.contractViolations).toEqual([]);
  });
});
