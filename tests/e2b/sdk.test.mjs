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
    assert.equal(await sb.isRunning(), true)
  } finally {
    assert.equal(await sb.kill(), true)
  }
  assert.equal(await sb.isRunning(), false)
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

test('commands: stdin, list, connect; PTY: create, resize, input, kill', async () => {
  const sb = await Sandbox.create({ timeoutMs: 60_000 })
  try {
    const reader = await sb.commands.run('read l; echo got $l', { background: true, stdin: true })
    await sb.commands.sendStdin(reader.pid, 'xyz\n')
    assert.equal((await reader.wait()).stdout, 'got xyz\n')
    const ticker = await sb.commands.run('for i in $(seq 1 20); do echo t$i; sleep 0.1; done', { background: true })
    const listed = (await sb.commands.list()).filter((p) => p.pid === ticker.pid)
    assert.equal(listed.length, 1)
    const again = await sb.commands.connect(ticker.pid)
    assert.match((await again.wait()).stdout, /t20/)
    const chunks = []
    const pty = await sb.pty.create({ cols: 80, rows: 24, onData: (d) => chunks.push(Buffer.from(d)), timeoutMs: 30_000 })
    await sb.pty.resize(pty.pid, { cols: 120, rows: 40 })
    await sb.pty.sendInput(pty.pid, new TextEncoder().encode('stty size; exit 0\n'))
    await pty.wait()
    assert.match(Buffer.concat(chunks).toString(), /40 120/)
    const other = await sb.pty.create({ cols: 80, rows: 24, onData: () => {}, timeoutMs: 30_000 })
    assert.equal(await sb.pty.kill(other.pid), true)
  } finally {
    await sb.kill()
  }
})

test('files: batch write, bytes, info, watch; list paging; timeout and expiry; metrics', async () => {
  const tag = `jsp-${process.pid}-${Date.now()}`
  const made = await Promise.all([1, 2, 3].map(() => Sandbox.create({ metadata: { tag }, timeoutMs: 60_000 })))
  const sb = made[0]
  try {
    await sb.files.write([{ path: 'w/a.txt', data: 'A' }, { path: '/tmp/b.bin', data: new Uint8Array([0, 255]) }])
    assert.deepEqual([...(await sb.files.read('/tmp/b.bin', { format: 'bytes' }))], [0, 255])
    const info = await sb.files.getInfo('w/a.txt')
    assert.equal(info.size, 1)
    const events = []
    const watcher = await sb.files.watchDir('w', (e) => events.push(e))
    await sb.files.write('w/new.txt', 'x')
    for (let i = 0; i < 50 && !events.some((e) => e.name === 'new.txt'); i++) await new Promise((r) => setTimeout(r, 100))
    await watcher.stop()
    assert.ok(events.some((e) => e.name === 'new.txt'), JSON.stringify(events))
    const pager = Sandbox.list({ query: { metadata: { tag } }, limit: 2 })
    const first = await pager.nextItems()
    assert.equal(first.length, 2)
    assert.equal(pager.hasNext, true)
    assert.equal((await pager.nextItems()).length, 1)
    const metrics = await sb.getMetrics()
    assert.ok(metrics.length >= 1 && metrics[0].memUsed > 0)
    await made[1].setTimeout(2_000)
    await new Promise((r) => setTimeout(r, 4_000))
    await assert.rejects(Sandbox.getInfo(made[1].sandboxId), NotFoundError)
  } finally {
    await Promise.all(made.map((s) => s.kill()))
  }
})

test('unknown sandboxes and wrong keys get the SDK errors', async () => {
  await assert.rejects(Sandbox.connect('nosuchsandbox0000000'), NotFoundError)
  await assert.rejects(Sandbox.create({ apiKey: 'reins_wrong_key_wrong_key_wrong_key_wrong_key_' }), AuthenticationError)
})
