// HnapiTests.cs — tests of the .NET bindings (bindings/dotnet/Hnapi.cs) against a running
// hnsecure sandbox. A console program without a test framework: one line per case, exit
// status 0 when every case passed.
//
//   mcs -warnaserror+ -out:HnapiTests.exe tests/dotnet/HnapiTests.cs bindings/dotnet/Hnapi.cs
//   LD_LIBRARY_PATH=target/debug mono HnapiTests.exe CLIENT_TOML SERVER_TOML
//   HNAPI_TEST_PANIC=hnapi_send_receive LD_LIBRARY_PATH=PANIC_LIBDIR mono HnapiTests.exe --panic-case CLIENT_TOML
//
// CLIENT_TOML and SERVER_TOML are those `hnsecure sandbox` prints. The sandbox's simulator
// answers like the Ministry; HNSIM-NORESPONSE never answers, HNSIM-ECHO echoes, and
// HNAPI-DEMO is routed to the server application this program runs on SERVER_TOML.
// --panic-case runs one case against a library built with the test-only feature
// `test-panic` (cargo build --lib --features test-panic), in which the function named by
// HNAPI_TEST_PANIC panics inside the library's boundary.
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading;

using Hnapi;

public static class HnapiTests
{
    const string Facility = "BC00000098";

    static string s_clientToml;
    static string s_serverToml;
    static int s_controlIds;
    static readonly string s_run = Process.GetCurrentProcess().Id.ToString();
    static HnapiClient s_leftOpen;
    static HnapiServer s_leftOpenServer;

    public static int Main(string[] args)
    {
        if (args.Length == 2 && args[0] == "--panic-case")
        {
            s_clientToml = Path.GetFullPath(args[1]);
            Console.WriteLine("# " + HnapiLibrary.Version + " (HNAPI_TEST_PANIC=" + Environment.GetEnvironmentVariable("HNAPI_TEST_PANIC")
                + "), client " + s_clientToml);
            var panicCases = new List<KeyValuePair<string, Action>>
            {
                Case("a panic in hnapi_send_receive is HNET_RTRN_INTERNALERROR, and the client still works", ForcedPanic),
            };
            int panicFailed = RunCases(panicCases);
            Console.WriteLine(panicFailed == 0 ? "the panic case passed" : "the panic case FAILED");
            return panicFailed == 0 ? 0 : 1;
        }
        if (args.Length != 2)
        {
            Console.Error.WriteLine("usage: mono HnapiTests.exe CLIENT_TOML SERVER_TOML");
            Console.Error.WriteLine("       HNAPI_TEST_PANIC=hnapi_send_receive mono HnapiTests.exe --panic-case CLIENT_TOML");
            return 2;
        }
        s_clientToml = Path.GetFullPath(args[0]);
        s_serverToml = Path.GetFullPath(args[1]);
        Console.WriteLine("# " + HnapiLibrary.Version + ", client " + s_clientToml + ", server " + s_serverToml);

        var cases = new List<KeyValuePair<string, Action>>
        {
            Case("version and code names match the binding's table", VersionAndCodeNames),
            Case("a missing config file is HNET_RTRN_CONFIGERROR with a message", MissingConfig),
            Case("an unknown ticket is HNET_RTRN_UNKNOWNTICKET", UnknownTicket),
            Case("invalid arguments are refused before the library", InvalidArguments),
            Case("null for each reference parameter is ArgumentNullException, before the library", NullArguments),
            Case("input without MSH is HNET_RTRN_INVALIDFORMATERROR with a last error", NoMsh),
            Case("the simulator answers a Volume 5 request with AA", SimulatorAnswers),
            Case("a ~200 KiB answer (larger than the binding's first buffer) comes back whole", LargeAnswer),
            Case("an unreachable gateway gives an AR from HNAPI naming the request", UnreachableGateway),
            Case("HNSIM-NORESPONSE with a 1000 ms timeout gives an AR TXFR024E within 2 s", NoResponseTimeout),
            Case("Receive polls and waits: null while pending; a null wait lasts until the answer", ReceivePending),
            Case("16 threads x 100 SendReceive on one client, each answer matched", ConcurrentSendReceive),
            Case("50 tickets in flight, received in reverse order, each matched", TicketsInReverse),
            Case("open and Dispose 1,000 clients: no thread or open file left behind", OpenCloseMany),
            Case("a C# server application answers through the gateway", ServerApplication),
            Case("Dispose ends a waiting server Receive; later calls throw ObjectDisposedException", DisposeWhileReceiving),
            Case("the log callback receives lines, none with message text, and stops", LogCallback),
        };

        int failed = RunCases(cases);

        // Leave a client and a server open, with a log callback that has run on the
        // library's threads: the process must still exit (run.sh runs this under a time
        // limit). Under Mono it hung here before the binding closed open handles at exit.
        try
        {
            HnapiLibrary.SetLogCallback((level, line) => { }, 4);
            s_leftOpen = HnapiClient.Open(s_clientToml);
            s_leftOpen.SendReceive(Message("HNSIM-ECHO", NextId()), TimeSpan.FromSeconds(10));
            s_leftOpenServer = HnapiServer.Open(s_serverToml);
            s_leftOpenServer.Receive(TimeSpan.FromMilliseconds(300));
            Console.WriteLine("# exiting with a client and a server open and a log callback set");
        }
        catch (Exception e)
        {
            failed++;
            Console.WriteLine("FAIL leaving a client and a server open for the exit: " + e.GetType().Name + ": " + e.Message);
        }

        Console.WriteLine(failed == 0
            ? "all " + cases.Count + " cases passed"
            : failed + " of " + cases.Count + " cases FAILED");
        return failed == 0 ? 0 : 1;
    }

    /// <summary>Runs each case, one line each; returns how many failed.</summary>
    static int RunCases(List<KeyValuePair<string, Action>> cases)
    {
        int failed = 0;
        foreach (var c in cases)
        {
            var clock = Stopwatch.StartNew();
            try
            {
                c.Value();
                Console.WriteLine("ok   " + c.Key + " (" + clock.ElapsedMilliseconds + " ms)");
            }
            catch (Exception e)
            {
                failed++;
                Console.WriteLine("FAIL " + c.Key + " (" + clock.ElapsedMilliseconds + " ms): " + e.GetType().Name + ": " + e.Message);
                if (!(e is CheckFailed))
                {
                    Console.WriteLine(e.StackTrace);
                }
            }
        }
        return failed;
    }

    static KeyValuePair<string, Action> Case(string name, Action body)
    {
        return new KeyValuePair<string, Action>(name, body);
    }

    // ---- the cases -------------------------------------------------------------------

    static void VersionAndCodeNames()
    {
        Check(HnapiLibrary.Version.StartsWith("hnsecure "), "version: " + HnapiLibrary.Version);
        foreach (HnetRtrn code in Enum.GetValues(typeof(HnetRtrn)))
        {
            Equal(code.ToString(), HnapiLibrary.CodeName((int)code), "hnapi_code_name(" + (int)code + ")");
        }
        int next = Enum.GetValues(typeof(HnetRtrn)).Cast<int>().Max() + 1;
        Equal("HNET_RTRN_UNKNOWN", HnapiLibrary.CodeName(next), "the library knows a code the binding lacks: " + next);
        Equal("HNET_RTRN_UNKNOWN", HnapiLibrary.CodeName(-1), "hnapi_code_name(-1)");
    }

    static void MissingConfig()
    {
        string missing = Path.Combine(Path.GetTempPath(), "hnapi-missing-" + s_run, "client.toml");
        HnapiException e = Throws(() => HnapiClient.Open(missing));
        Equal(HnetRtrn.HNET_RTRN_CONFIGERROR, e.Code, "code");
        Check(e.LastError.Length > 0, "the last error is empty");
        Check(e.Message.Contains(e.LastError), "the message lacks the last error: " + e.Message);

        e = Throws(() => HnapiServer.Open(missing));
        Equal(HnetRtrn.HNET_RTRN_CONFIGERROR, e.Code, "server code");
        Check(e.LastError.Length > 0, "the server's last error is empty");

        e = Throws(() => HnapiClient.OpenToml("facility = \"BC00000098\"\n", "/"));
        Equal(HnetRtrn.HNET_RTRN_CONFIGERROR, e.Code, "incomplete toml");
        Check(e.LastError.Length > 0, "the toml's last error is empty");
    }

    static void UnknownTicket()
    {
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            HnapiException e = Throws(() => client.Receive(0xDEADBEEFUL, TimeSpan.Zero));
            Equal(HnetRtrn.HNET_RTRN_UNKNOWNTICKET, e.Code, "code");
            Check(e.LastError.Length > 0, "the last error is empty");
        }
    }

    static void InvalidArguments()
    {
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            ThrowsAny<ArgumentOutOfRangeException>(() => client.SendReceive(Message("HNSIM-ECHO", NextId()), TimeSpan.Zero));
            ThrowsAny<ArgumentOutOfRangeException>(() => client.Receive(1, TimeSpan.FromSeconds(-2)));
            ThrowsAny<ArgumentException>(() => HnapiClient.Open("a\0b"));
        }
    }

    static void NullArguments()
    {
        // The binding checks every reference parameter itself: a null never reaches the
        // library (which would answer HNET_RTRN_INVALIDPARAMETER, an HnapiException).
        NullRefused("configPath", () => HnapiClient.Open(null));
        NullRefused("toml", () => HnapiClient.OpenToml(null, "/"));
        NullRefused("configPath", () => HnapiServer.Open(null));
        NullRefused("message", () => new HnapiRequest(1, null));
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            NullRefused("message", () => client.SendReceive((byte[])null));
            NullRefused("message", () => client.SendReceive((string)null, TimeSpan.FromSeconds(5)));
            NullRefused("message", () => client.Send(null));
            // The client is untouched by them.
            string id = NextId();
            string a = Encoding.ASCII.GetString(client.SendReceive(Message("HNSIM-ECHO", id), TimeSpan.FromSeconds(10)));
            Equal(id, Field(a, "MSA", 2), "MSA-2 after the refused calls");
        }
        using (HnapiServer server = HnapiServer.Open(s_serverToml))
        {
            NullRefused("answer", () => server.Respond(1, null));
        }
        // Where null has a meaning, it is not refused: OpenToml's baseDir (the current
        // directory; see UnreachableGateway), a null timeout (the configured one), a null
        // wait (until the answer exists; see ReceivePending), SetLogCallback(null, 0)
        // (stop; see LogCallback), an exception without a last error.
        Equal("", new HnapiException(HnetRtrn.HNET_RTRN_PENDING, null).LastError, "LastError of new HnapiException(code, null)");
    }

    static void NullRefused(string paramName, Action body)
    {
        ArgumentNullException e = ThrowsAny<ArgumentNullException>(body);
        Equal(paramName, e.ParamName, "ParamName");
    }

    static void NoMsh()
    {
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            byte[] noMsh = Encoding.ASCII.GetBytes("PID||9029274643^^^BC^PH\r");
            HnapiException e = Throws(() => client.SendReceive(noMsh, TimeSpan.FromSeconds(5)));
            Equal(HnetRtrn.HNET_RTRN_INVALIDFORMATERROR, e.Code, "SendReceive");
            Check(e.LastError.Length > 0, "SendReceive: the last error is empty");

            e = Throws(() => client.Send(noMsh));
            Equal(HnetRtrn.HNET_RTRN_INVALIDFORMATERROR, e.Code, "Send");
            Check(e.LastError.Length > 0, "Send: the last error is empty");

            e = Throws(() => client.SendReceive(new byte[0]));
            Check(e.Code == HnetRtrn.HNET_RTRN_INVALIDFORMATERROR || e.Code == HnetRtrn.HNET_RTRN_INVALIDPARAMETER,
                "an empty message gave " + e.Code);
        }
    }

    static void SimulatorAnswers()
    {
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            string id = NextId();
            string request = "MSH|^~\\&|HR|" + Facility + "|RAIEND-PYR-RL|BC0003000|" + Now() + "|TESTUSER|R35|" + id + "|D|2.3\r"
                + "ZHD|" + Now() + "|^00000001|TRAININGAdmin\rPID||9029274643^^^BC^PH\rIN1|||||2100030|||||20030531\rZIH|||||K\r";
            string answer = client.SendReceive(request, TimeSpan.FromSeconds(10));
            Equal("AA", Field(answer, "MSA", 1), "MSA-1");
            Equal(id, Field(answer, "MSA", 2), "MSA-2");
            Equal("RAIEND-PYR-RL", Field(answer, "MSH", 3), "MSH-3");
        }
    }

    static void LargeAnswer()
    {
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            var body = new StringBuilder();
            for (int i = 0; body.Length < 200 * 1024; i++)
            {
                body.Append("NTE|").Append(i).Append("||").Append('x', 100).Append(i % 10).Append('\r');
            }
            string id = NextId();
            byte[] request = Message("HNSIM-ECHO", id, body.ToString());

            byte[] answer = client.SendReceive(request, TimeSpan.FromSeconds(30));
            CheckEcho(request, answer, id, "SendReceive");

            // And through a ticket (hnapi_receive's kept answer).
            id = NextId();
            request = Message("HNSIM-ECHO", id, body.ToString());
            ulong ticket = client.Send(request, TimeSpan.FromSeconds(30));
            answer = client.Receive(ticket);
            Check(answer != null, "Receive without a limit returned null");
            CheckEcho(request, answer, id, "Receive");
        }
    }

    static void CheckEcho(byte[] request, byte[] answer, string id, string how)
    {
        // The binding does not expose hnapi's buffers: it starts with Call.InitialBuffer
        // bytes and asks again with the size the library names (HNET_RTRN_BUFFERTOOSMALL).
        // An answer many times that size shows the second call happened and was whole.
        Check(answer.Length > 200 * 1024 && answer.Length > 4 * Call.InitialBuffer,
            how + ": the answer has only " + answer.Length + " bytes (first buffer " + Call.InitialBuffer + ")");
        string a = Encoding.ASCII.GetString(answer);
        Equal("AA", Field(a, "MSA", 1), how + " MSA-1");
        Equal(id, Field(a, "MSA", 2), how + " MSA-2");
        string[] sent = Segments(Encoding.ASCII.GetString(request)).Skip(1).ToArray();
        string[] echoed = Segments(a).Where(s => s.StartsWith("NTE|")).ToArray();
        Equal(sent.Length, echoed.Length, how + ": NTE segments");
        Check(sent.SequenceEqual(echoed), how + ": the echoed segments differ from those sent");
    }

    static void UnreachableGateway()
    {
        string toml = "facility = \"" + Facility + "\"\n"
            + "credential = \"" + TomlString(CredentialPath()) + "\"\n"
            + "gateways = [\"127.0.0.1:1\"]\n"
            + "timeout_secs = 10\n"
            + "connect_timeout_secs = 2\n";
        // baseDir null: the current directory (nothing relative in this configuration).
        using (HnapiClient client = HnapiClient.OpenToml(toml, null))
        {
            string id = NextId();
            var clock = Stopwatch.StartNew();
            string answer = Encoding.ASCII.GetString(client.SendReceive(Message("RAIEND-PYR-RL", id), TimeSpan.FromSeconds(5)));
            Equal("HNAPI", Field(answer, "MSH", 3), "MSH-3");
            Equal("AR", Field(answer, "MSA", 1), "MSA-1");
            Equal(id, Field(answer, "MSA", 2), "MSA-2");
            Console.WriteLine("     MSA-3 " + Field(answer, "MSA", 3) + " after " + clock.ElapsedMilliseconds + " ms");
        }
    }

    static void NoResponseTimeout()
    {
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            string id = NextId();
            var clock = Stopwatch.StartNew();
            string answer = Encoding.ASCII.GetString(client.SendReceive(Message("HNSIM-NORESPONSE", id), TimeSpan.FromMilliseconds(1000)));
            long ms = clock.ElapsedMilliseconds;
            Check(ms < 2000, "the AR came after " + ms + " ms");
            Check(ms >= 500, "the AR came after only " + ms + " ms");
            Equal("AR", Field(answer, "MSA", 1), "MSA-1");
            Equal(id, Field(answer, "MSA", 2), "MSA-2");
            Check(Field(answer, "MSA", 3).StartsWith("TXFR024E"), "MSA-3: " + Field(answer, "MSA", 3));
            // The gateway's own AR (MSH-3 HNGATE) usually comes just before the client's (HNAPI).
            Console.WriteLine("     MSH-3 " + Field(answer, "MSH", 3) + " after " + ms + " ms");
        }
    }

    static void ReceivePending()
    {
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            string id = NextId();
            ulong ticket = client.Send(Message("HNSIM-NORESPONSE", id), TimeSpan.FromMilliseconds(1500));
            Check(client.Receive(ticket, TimeSpan.Zero) == null, "a poll returned an answer");
            var clock = Stopwatch.StartNew();
            Check(client.Receive(ticket, TimeSpan.FromMilliseconds(300)) == null, "a 300 ms wait returned an answer");
            long ms = clock.ElapsedMilliseconds;
            Check(ms >= 250 && ms < 1000, "a 300 ms wait took " + ms + " ms");
            // No wait given (null): until the answer exists, the AR at the 1500 ms timeout.
            clock.Restart();
            byte[] answer = client.Receive(ticket);
            ms = clock.ElapsedMilliseconds;
            Check(answer != null, "Receive(ticket) returned null: it did not wait for the answer");
            Check(ms >= 500, "Receive(ticket) returned after " + ms + " ms, before the 1500 ms timeout could end it");
            string a = Encoding.ASCII.GetString(answer);
            Equal("AR", Field(a, "MSA", 1), "MSA-1");
            Equal(id, Field(a, "MSA", 2), "MSA-2");
            HnapiException e = Throws(() => client.Receive(ticket, TimeSpan.Zero));
            Equal(HnetRtrn.HNET_RTRN_UNKNOWNTICKET, e.Code, "a ticket received twice");
        }
    }

    static void ConcurrentSendReceive()
    {
        const int Threads = 16, PerThread = 100;
        var errors = new ConcurrentQueue<string>();
        int answered = 0;
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            var threads = new Thread[Threads];
            for (int t = 0; t < Threads; t++)
            {
                int thread = t;
                threads[t] = new Thread(() =>
                {
                    for (int i = 0; i < PerThread; i++)
                    {
                        try
                        {
                            string id = NextId();
                            string answer = client.SendReceive(
                                Encoding.ASCII.GetString(Message("HNSIM-ECHO", id, "NTE|" + thread + "|" + i + "\r")),
                                TimeSpan.FromSeconds(30));
                            if (Field(answer, "MSA", 1) != "AA" || Field(answer, "MSA", 2) != id)
                            {
                                errors.Enqueue("thread " + thread + " #" + i + ": MSA " + Field(answer, "MSA", 1) + " " + Field(answer, "MSA", 2) + ", sent " + id);
                            }
                            else if (!answer.Contains("\rNTE|" + thread + "|" + i + "\r"))
                            {
                                errors.Enqueue("thread " + thread + " #" + i + ": another request's segments");
                            }
                            else
                            {
                                Interlocked.Increment(ref answered);
                            }
                        }
                        catch (Exception e)
                        {
                            errors.Enqueue("thread " + thread + " #" + i + ": " + e.Message);
                        }
                    }
                });
                threads[t].Start();
            }
            foreach (Thread t in threads)
            {
                t.Join();
            }
        }
        Check(errors.IsEmpty, errors.Count + " errors, first: " + errors.FirstOrDefault());
        Equal(Threads * PerThread, answered, "answers matched");
    }

    static void TicketsInReverse()
    {
        const int InFlight = 50;
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            var ids = new string[InFlight];
            var tickets = new ulong[InFlight];
            for (int i = 0; i < InFlight; i++)
            {
                ids[i] = NextId();
                tickets[i] = client.Send(Message("HNSIM-ECHO", ids[i], "NTE|" + i + "\r"), TimeSpan.FromSeconds(30));
            }
            Equal(InFlight, tickets.Distinct().Count(), "distinct tickets");
            for (int i = InFlight - 1; i >= 0; i--)
            {
                byte[] answer = client.Receive(tickets[i], TimeSpan.FromSeconds(30));
                Check(answer != null, "ticket " + i + ": no answer within 30 s");
                string a = Encoding.ASCII.GetString(answer);
                Equal("AA", Field(a, "MSA", 1), "ticket " + i + " MSA-1");
                Equal(ids[i], Field(a, "MSA", 2), "ticket " + i + " MSA-2");
                Check(a.Contains("\rNTE|" + i + "\r"), "ticket " + i + ": another request's segments");
            }
        }
    }

    static void OpenCloseMany()
    {
        // What the runtime and the library set up once comes with the first client.
        using (HnapiClient.Open(s_clientToml))
        {
        }
        int[] before = Usage();
        if (before == null)
        {
            Console.WriteLine("     no /proc/self: threads and open files not compared");
        }

        // An open client holds threads and files of its own, so a Dispose that did not
        // reach hnapi_client_close would show below.
        var held = new List<HnapiClient>();
        for (int i = 0; i < 10; i++)
        {
            held.Add(HnapiClient.Open(s_clientToml));
        }
        int[] holding = Usage();
        held.ForEach(c => c.Dispose());
        if (before != null)
        {
            Check(holding[0] >= before[0] + 10, "10 open clients add only " + (holding[0] - before[0]) + " threads: the comparison below would see no leak");
        }

        for (int i = 0; i < 1000; i++)
        {
            HnapiClient client = HnapiClient.Open(s_clientToml);
            client.Dispose();
        }
        int[] after = Settled(before);

        // Clients never disposed: their SafeHandles are released by the finalizer. Opened
        // on a thread that has ended, so that no stack still refers to them.
        var forgetting = new Thread(() =>
        {
            for (int i = 0; i < 10; i++)
            {
                HnapiClient.Open(s_clientToml);
            }
        });
        forgetting.Start();
        forgetting.Join();
        int[] finalized = Settled(before, () =>
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        });

        if (before != null)
        {
            Console.WriteLine("     threads " + before[0] + ", with 10 clients open " + holding[0] + ", after 1000 " + after[0]
                + ", after 10 finalized " + finalized[0] + "; open files " + before[1] + ", " + holding[1] + ", " + after[1] + ", " + finalized[1]);
            CheckNoGrowth(before, after, "after 1000 Open/Dispose");
            CheckNoGrowth(before, finalized, "after 10 clients left to the finalizer");
        }
    }

    /// <summary>What the runtime may add of its own meanwhile (threads, open files).</summary>
    static readonly int[] s_tolerance = { 2, 2 };

    /// <summary>This process's thread and open-file counts (Linux), or null without /proc.</summary>
    static int[] Usage()
    {
        if (!Directory.Exists("/proc/self/task") || !Directory.Exists("/proc/self/fd"))
        {
            return null;
        }
        return new[]
        {
            Directory.GetFileSystemEntries("/proc/self/task").Length,
            Directory.GetFileSystemEntries("/proc/self/fd").Length,
        };
    }

    /// <summary>
    /// The counts once back within the tolerance of <paramref name="before"/> (closed
    /// clients' threads end shortly after the close returns), or as they are after 5 s.
    /// </summary>
    static int[] Settled(int[] before, Action each = null)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (each != null)
            {
                each();
            }
            int[] now = Usage();
            if (now == null || (now[0] <= before[0] + s_tolerance[0] && now[1] <= before[1] + s_tolerance[1]) || clock.ElapsedMilliseconds > 5000)
            {
                return now;
            }
            Thread.Sleep(50);
        }
    }

    static void CheckNoGrowth(int[] before, int[] now, string when)
    {
        Check(now[0] <= before[0] + s_tolerance[0], when + ": " + now[0] + " threads, " + before[0] + " before");
        Check(now[1] <= before[1] + s_tolerance[1], when + ": " + now[1] + " open files, " + before[1] + " before");
    }

    /// <summary>--panic-case: HNAPI_TEST_PANIC=hnapi_send_receive with a test-panic library.</summary>
    static void ForcedPanic()
    {
        Equal("hnapi_send_receive", Environment.GetEnvironmentVariable("HNAPI_TEST_PANIC"), "HNAPI_TEST_PANIC");
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            HnapiException e = null;
            try
            {
                client.SendReceive(Message("HNSIM-ECHO", NextId()), TimeSpan.FromSeconds(10));
            }
            catch (HnapiException thrown)
            {
                e = thrown;
            }
            Check(e != null, "SendReceive succeeded: is the library in LD_LIBRARY_PATH built with --features test-panic?");
            Console.WriteLine("     " + e.Message);
            Equal(HnetRtrn.HNET_RTRN_INTERNALERROR, e.Code, "Code");
            Equal("hnapi_send_receive", e.Function, "Function");
            Check(e.Message.Contains("internal error in hnapi_send_receive"), "the message does not name the function: " + e.Message);

            // The library and this client still serve: a ticket's answer from the echo.
            string id = NextId();
            ulong ticket = client.Send(Message("HNSIM-ECHO", id), TimeSpan.FromSeconds(10));
            byte[] answer = client.Receive(ticket);
            Check(answer != null, "no answer after the panic");
            string a = Encoding.ASCII.GetString(answer);
            Check(a.Contains("\rMSA|AA|" + id + "|"), "the answer after the panic has no MSA|AA|" + id + ": " + a.Replace('\r', '\n'));
        }
    }

    static void ServerApplication()
    {
        const string Marker = "CSHARP-SERVER";
        // A request above BigAnswerFrom bytes gets an answer of more than BigAnswer bytes.
        const int BigAnswerFrom = 32 * 1024, BigAnswer = 100 * 1024;
        int handled = 0;
        var serverErrors = new ConcurrentQueue<string>();
        using (HnapiServer server = HnapiServer.Open(s_serverToml))
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            var stop = new ManualResetEvent(false);
            // Two answering threads on one server: they share it as the C object allows.
            var answerers = new Thread[2];
            for (int t = 0; t < answerers.Length; t++)
            {
                answerers[t] = new Thread(() =>
                {
                    while (!stop.WaitOne(0))
                    {
                        try
                        {
                            HnapiRequest request = server.Receive(TimeSpan.FromMilliseconds(200));
                            if (request == null)
                            {
                                continue;
                            }
                            string r = Encoding.ASCII.GetString(request.Message);
                            string ack = "MSH|^~\\&|" + Field(r, "MSH", 5) + "|" + Field(r, "MSH", 6) + "|" + Field(r, "MSH", 3) + "|" + Field(r, "MSH", 4)
                                + "|" + Now() + "||ACK|A" + request.Id + "|D|2.3\r"
                                + "MSA|AA|" + Field(r, "MSH", 10) + "|" + Marker + "\r"
                                + "NTE|||" + request.Message.Length + "\r";
                            if (request.Message.Length > BigAnswerFrom)
                            {
                                ack += "NTE|||" + new string('z', BigAnswer) + "\r";
                            }
                            server.Respond(request.Id, Encoding.ASCII.GetBytes(ack));
                            Interlocked.Increment(ref handled);
                        }
                        catch (Exception e)
                        {
                            serverErrors.Enqueue(e.GetType().Name + ": " + e.Message);
                        }
                    }
                });
                answerers[t].Start();
            }
            try
            {
                // The server connects in the background: until it has, the gateway answers AR.
                var clock = Stopwatch.StartNew();
                string first = null;
                while (clock.ElapsedMilliseconds < 15000)
                {
                    string id = NextId();
                    string a = Encoding.ASCII.GetString(client.SendReceive(Message("HNAPI-DEMO", id), TimeSpan.FromSeconds(5)));
                    if (Field(a, "MSA", 1) == "AA")
                    {
                        Equal(id, Field(a, "MSA", 2), "first MSA-2");
                        Equal(Marker, Field(a, "MSA", 3), "first MSA-3");
                        first = a;
                        break;
                    }
                    Thread.Sleep(200);
                }
                Check(first != null, "no AA from the server application within 15 s");
                Console.WriteLine("     the server answered after " + clock.ElapsedMilliseconds + " ms");

                // Several at once, and one larger than the first receive buffer.
                var tickets = new List<KeyValuePair<string, ulong>>();
                for (int i = 0; i < 10; i++)
                {
                    string id = NextId();
                    tickets.Add(new KeyValuePair<string, ulong>(id, client.Send(Message("HNAPI-DEMO", id), TimeSpan.FromSeconds(10))));
                }
                foreach (var t in tickets)
                {
                    string a = Encoding.ASCII.GetString(client.Receive(t.Value, TimeSpan.FromSeconds(15)) ?? new byte[0]);
                    Equal("AA", Field(a, "MSA", 1), t.Key + " MSA-1");
                    Equal(t.Key, Field(a, "MSA", 2), t.Key + " MSA-2");
                    Equal(Marker, Field(a, "MSA", 3), t.Key + " MSA-3");
                }
                string bigId = NextId();
                byte[] big = Message("HNAPI-DEMO", bigId, "NTE|||" + new string('y', 64 * 1024) + "\r");
                string bigAnswer = Encoding.ASCII.GetString(client.SendReceive(big, TimeSpan.FromSeconds(15)));
                Equal("AA", Field(bigAnswer, "MSA", 1), "the large request's MSA-1");
                Equal(bigId, Field(bigAnswer, "MSA", 2), "the large request's MSA-2");
                Equal(big.Length.ToString(), Field(bigAnswer, "NTE", 3), "the size of the request the server saw");
                // Its answer is larger than the binding's first buffer: SendReceive asked
                // again with a larger one, which must return the kept answer without sending
                // the request a second time (the server's count below would show it).
                Check(Segments(bigAnswer).Contains("NTE|||" + new string('z', BigAnswer)), "the large answer did not come back whole");

                // An answer for a request that does not exist.
                HnapiException e = Throws(() => server.Respond(987654321UL, Message("HNAPI-DEMO", NextId())));
                Equal(HnetRtrn.HNET_RTRN_UNKNOWNREQUEST, e.Code, "an unknown request id");
            }
            finally
            {
                stop.Set();
                foreach (Thread t in answerers)
                {
                    t.Join();
                }
            }
        }
        Check(serverErrors.IsEmpty, "the server application failed: " + serverErrors.FirstOrDefault());
        Check(handled == 12, "the server handled " + handled + " requests, not 12: one was sent twice?");
    }

    static void DisposeWhileReceiving()
    {
        HnapiServer server = HnapiServer.Open(s_serverToml);
        Exception seen = null;
        var receiving = new Thread(() =>
        {
            try
            {
                HnapiRequest r = server.Receive();
                seen = new CheckFailed("Receive returned " + (r == null ? "null" : "a request"));
            }
            catch (Exception e)
            {
                seen = e;
            }
        });
        receiving.Start();
        Thread.Sleep(300);
        var clock = Stopwatch.StartNew();
        server.Dispose();
        Check(receiving.Join(2000), "Receive still waits 2 s after Dispose");
        Check(seen is ObjectDisposedException, "Receive ended with " + seen);
        Console.WriteLine("     the waiting Receive ended " + clock.ElapsedMilliseconds + " ms after Dispose");
        ThrowsAny<ObjectDisposedException>(() => server.Receive(TimeSpan.Zero));
        ThrowsAny<ObjectDisposedException>(() => server.Respond(1, Message("HNAPI-DEMO", NextId())));
        server.Dispose();

        HnapiClient client = HnapiClient.Open(s_clientToml);
        client.Dispose();
        client.Dispose();
        ThrowsAny<ObjectDisposedException>(() => client.SendReceive(Message("HNSIM-ECHO", NextId())));
        ThrowsAny<ObjectDisposedException>(() => client.Send(Message("HNSIM-ECHO", NextId())));
        ThrowsAny<ObjectDisposedException>(() => client.Receive(1, TimeSpan.Zero));
    }

    static void LogCallback()
    {
        const string Secret = "ZZSECRETTEXT4242";
        var lines = new ConcurrentQueue<KeyValuePair<int, string>>();
        HnapiLibrary.SetLogCallback((level, line) => lines.Enqueue(new KeyValuePair<int, string>(level, line)), 5);
        string id = NextId();
        try
        {
            using (HnapiClient client = HnapiClient.Open(s_clientToml))
            {
                string a = Encoding.ASCII.GetString(client.SendReceive(
                    Message("HNSIM-ECHO", id, "PID||9029274643^^^BC^PH||" + Secret + "^PATIENT\r"), TimeSpan.FromSeconds(10)));
                Equal("AA", Field(a, "MSA", 1), "MSA-1");
                a = Encoding.ASCII.GetString(client.SendReceive(Message("HNSIM-NORESPONSE", NextId(), "NTE|||" + Secret + "\r"), TimeSpan.FromMilliseconds(300)));
                Equal("AR", Field(a, "MSA", 1), "MSA-1 of the timeout");
            }
        }
        finally
        {
            HnapiLibrary.SetLogCallback(null, 0);
        }
        int count = lines.Count;
        Console.WriteLine("     " + count + " lines, levels " + string.Join(",", lines.Select(l => l.Key).Distinct().OrderBy(l => l))
            + "; e.g. \"" + lines.Select(l => l.Value).FirstOrDefault() + "\"");
        Check(count > 0, "no log lines");
        Check(lines.All(l => l.Key >= 1 && l.Key <= 5), "a level outside 1..5");
        foreach (var l in lines)
        {
            Check(!l.Value.Contains(Secret) && !l.Value.Contains("MSH|") && !l.Value.Contains("9029274643"),
                "a log line carries message text: " + l.Value);
        }

        // Stopped: a transaction now logs nothing.
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            client.SendReceive(Message("HNSIM-ECHO", NextId()), TimeSpan.FromSeconds(10));
        }
        Thread.Sleep(200);
        Equal(count, lines.Count, "lines after the callback was removed");

        // A callback that throws does not disturb the library.
        HnapiLibrary.SetLogCallback((level, line) => { throw new InvalidOperationException("from the callback"); }, 5);
        try
        {
            using (HnapiClient client = HnapiClient.Open(s_clientToml))
            {
                string a = Encoding.ASCII.GetString(client.SendReceive(Message("HNSIM-ECHO", NextId()), TimeSpan.FromSeconds(10)));
                Equal("AA", Field(a, "MSA", 1), "MSA-1 with a throwing callback");
            }
        }
        finally
        {
            HnapiLibrary.SetLogCallback(null, 0);
        }

        // Replacing the callback from many threads at once while the library logs.
        var setters = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            for (int i = 0; i < 200; i++)
            {
                HnapiLibrary.SetLogCallback((level, line) => { }, 1 + (i + t) % 5);
            }
        })).ToList();
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            setters.ForEach(s => s.Start());
            for (int i = 0; i < 10; i++)
            {
                client.SendReceive(Message("HNSIM-ECHO", NextId()), TimeSpan.FromSeconds(10));
            }
            setters.ForEach(s => s.Join());
        }
        HnapiLibrary.SetLogCallback(null, 0);
    }

    // ---- HL7, minimally --------------------------------------------------------------

    /// <summary>A request to <paramref name="application"/> from this facility, MSH-10 = id.</summary>
    static byte[] Message(string application, string id, string segments = "")
    {
        return Encoding.ASCII.GetBytes("MSH|^~\\&|HNAPITEST|" + Facility + "|" + application + "|BC0003000|" + Now()
            + "|TESTUSER|R03|" + id + "|D|2.3\r" + segments);
    }

    static string NextId()
    {
        return "CS" + s_run + "-" + Interlocked.Increment(ref s_controlIds);
    }

    static string Now()
    {
        return DateTime.Now.ToString("yyyyMMddHHmmss");
    }

    static string[] Segments(string message)
    {
        return message.Split(new[] { '\r' }, StringSplitOptions.RemoveEmptyEntries);
    }

    /// <summary>SEG-n of the first SEG segment (MSH-1 is the separator itself), "" when absent.</summary>
    static string Field(string message, string segment, int n)
    {
        foreach (string s in Segments(message))
        {
            string[] f = s.Split('|');
            if (f[0] == segment)
            {
                int i = segment == "MSH" ? n - 1 : n;
                return i < f.Length ? f[i] : "";
            }
        }
        return "";
    }

    // ---- the sandbox's files ---------------------------------------------------------

    /// <summary>The absolute path of the credential that client.toml names.</summary>
    static string CredentialPath()
    {
        foreach (string line in File.ReadAllLines(s_clientToml))
        {
            string l = line.Trim();
            if (l.StartsWith("credential") && l.Contains("="))
            {
                string value = l.Substring(l.IndexOf('=') + 1).Trim().Trim('"');
                return Path.GetFullPath(Path.Combine(Path.GetDirectoryName(s_clientToml), value));
            }
        }
        throw new CheckFailed("no credential in " + s_clientToml);
    }

    static string TomlString(string s)
    {
        return s.Replace("\\", "\\\\").Replace("\"", "\\\"");
    }

    // ---- checks ----------------------------------------------------------------------

    sealed class CheckFailed : Exception
    {
        public CheckFailed(string message) : base(message) { }
    }

    static void Check(bool condition, string what)
    {
        if (!condition)
        {
            throw new CheckFailed(what);
        }
    }

    static void Equal<T>(T expected, T actual, string what)
    {
        if (!EqualityComparer<T>.Default.Equals(expected, actual))
        {
            throw new CheckFailed(what + ": expected " + expected + ", got " + actual);
        }
    }

    static HnapiException Throws(Action body)
    {
        return ThrowsAny<HnapiException>(body);
    }

    static TException ThrowsAny<TException>(Action body) where TException : Exception
    {
        try
        {
            body();
        }
        catch (TException e)
        {
            return e;
        }
        catch (Exception e)
        {
            throw new CheckFailed("expected " + typeof(TException).Name + ", got " + e.GetType().Name + ": " + e.Message);
        }
        throw new CheckFailed("expected " + typeof(TException).Name + ", nothing was thrown");
    }
}
