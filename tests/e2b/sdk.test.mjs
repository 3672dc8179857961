// The E2B JavaScript SDK against Reins (run by scripts/test-e2b with
// E2B_API_KEY, E2B_API_URL and E2B_SANDBOX_URL set to a fresh `reins up`).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox, CommandExitError, NotFoundError, AuthenticationError } from 'e2b'

test('create with metadata, envs and timeout; run; get info; kill', async () => {
  const sb = await Sandbox.create({ metadata: { suite: 'js' }, envs: { GREETING: 'hi' }, timeoutMs: 90_000 })
  try {
    assert.ok(!sb.sandboxId.includes('-'))
    const info = await sb.getInfo()
    assert.deepEqual(info.metadata, { suite: 'js' })
    const r = await sb.commands.run('echo $GREETING; whoami; pwd')
    assert.equal(r.stdout, 'hi\nuser\n/home/user\n')
    assert.equal((await sb.commands.run('whoami', { user: 'root' })).stdout, 'root\n')
  } finally {
    assert.equal(await sb.kill(), true)
  }
})

test('a non-zero exit throws CommandExitError; streaming callbacks; background and kill', async () => {
  const sb = await Sandbox.create({ timeoutMs: 60_000 })
  try {
    await assert.rejects(sb.commands.run('echo part; exit 5'), (e) => e instanceof CommandExitError && e.exitCode === 5)
    const out = []
    await sb.commands.run('echo a; echo b', { onStdout: (d) => out.push(d) })
    assert.equal(out.join(''), 'a\nb\n')
    const h = await sb.commands.run('sleep 60', { background: true })
    assert.equal(await h.kill(), true)
  } finally {
    await sb.kill()
  }
})

test('files: write, read, list, exists, make dir, rename, remove', async () => {
  const sb = await Sandbox.create({ timeoutMs: 60_000 })
  try {
    await sb.files.write('/home/user/js/a.txt', 'hello')
    assert.equal(await sb.files.read('js/a.txt'), 'hello')
    const names = (await sb.files.list('/home/user/js')).map((e) => e.name)
    assert.deepEqual(names, ['a.txt'])
    assert.equal(await sb.files.exists('js/a.txt'), true)
    assert.equal(await sb.files.exists('js/nope.txt'), false)
    assert.equal(await sb.files.makeDir('js/sub'), true)
    await sb.files.rename('js/a.txt', 'js/sub/b.txt')
    assert.equal((await sb.commands.run('cat js/sub/b.txt')).stdout, 'hello')
    await sb.files.remove('js/sub')
    assert.equal(await sb.files.exists('js/sub/b.txt'), false)
  } finally {
    await sb.kill()
  }
})

test('list by metadata; pause and connect keep files', async () => {
  const tag = `js-${process.pid}-${Date.now()}`
  const sb = await Sandbox.create({ metadata: { tag }, timeoutMs: 60_000 })
  try {
    const items = await Sandbox.list({ query: { metadata: { tag } } }).nextItems()
    assert.deepEqual(items.map((s) => s.sandboxId), [sb.sandboxId])
    await sb.files.write('kept.txt', 'yes')
    await sb.pause()
    const again = await Sandbox.connect(sb.sandboxId, { timeoutMs: 60_000 })
    assert.equal(await again.files.read('kept.txt'), 'yes')
  } finally {
    await sb.kill()
  }
})

test('unknown sandboxes and wrong keys get the SDK errors', async () => {
  await assert.rejects(Sandbox.connect('nosuchsandbox0000000'), NotFoundError)
  await assert.rejects(Sandbox.create({ apiKey: 'reins_wrong_key_wrong_key_wrong_key_wrong_key_' }), AuthenticationError)
})
