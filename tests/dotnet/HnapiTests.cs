// HnapiTests.cs — tests of the .NET bindings (bindings/dotnet/Hnapi.cs) against a running
// hnsecure sandbox. A console program without a test framework: one line per case, exit
// status 0 when every case passed.
//
//   mcs -warnaserror+ -out:HnapiTests.exe tests/dotnet/HnapiTests.cs bindings/dotnet/Hnapi.cs
//   LD_LIBRARY_PATH=target/debug mono HnapiTests.exe CLIENT_TOML SERVER_TOML
//
// CLIENT_TOML and SERVER_TOML are those `hnsecure sandbox` prints. The sandbox's simulator
// answers like the Ministry; HNSIM-NORESPONSE never answers, HNSIM-ECHO echoes, and
// HNAPI-DEMO is routed to the server application this program runs on SERVER_TOML.
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
        if (args.Length != 2)
        {
            Console.Error.WriteLine("usage: mono HnapiTests.exe CLIENT_TOML SERVER_TOML");
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
            Case("input without MSH is HNET_RTRN_INVALIDFORMATERROR with a last error", NoMsh),
            Case("the simulator answers a Volume 5 request with AA", SimulatorAnswers),
            Case("a ~200 KiB answer (larger than the first buffer) comes back whole", LargeAnswer),
            Case("an unreachable gateway gives an AR from HNAPI naming the request", UnreachableGateway),
            Case("HNSIM-NORESPONSE with a 1000 ms timeout gives an AR TXFR024E within 2 s", NoResponseTimeout),
            Case("Receive polls and waits: null while pending", ReceivePending),
            Case("8 threads x 50 SendReceive on one client, each answer matched", ConcurrentSendReceive),
            Case("20 tickets in flight, received in reverse order, each matched", TicketsInReverse),
            Case("a C# server application answers through the gateway", ServerApplication),
            Case("Dispose ends a waiting server Receive; later calls throw ObjectDisposedException", DisposeWhileReceiving),
            Case("the log callback receives lines, none with message text, and stops", LogCallback),
        };

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
            ThrowsAny<ArgumentNullException>(() => client.SendReceive((byte[])null));
            ThrowsAny<ArgumentOutOfRangeException>(() => client.SendReceive(Message("HNSIM-ECHO", NextId()), TimeSpan.Zero));
            ThrowsAny<ArgumentOutOfRangeException>(() => client.Receive(1, TimeSpan.FromSeconds(-2)));
            ThrowsAny<ArgumentException>(() => HnapiClient.Open("a\0b"));
        }
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
        Check(answer.Length > 200 * 1024, how + ": the answer has only " + answer.Length + " bytes");
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
        using (HnapiClient client = HnapiClient.OpenToml(toml, Path.GetTempPath()))
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
            byte[] answer = client.Receive(ticket, TimeSpan.FromSeconds(5));
            Check(answer != null, "no answer after the transaction's timeout");
            string a = Encoding.ASCII.GetString(answer);
            Equal("AR", Field(a, "MSA", 1), "MSA-1");
            Equal(id, Field(a, "MSA", 2), "MSA-2");
            HnapiException e = Throws(() => client.Receive(ticket, TimeSpan.Zero));
            Equal(HnetRtrn.HNET_RTRN_UNKNOWNTICKET, e.Code, "a ticket received twice");
        }
    }

    static void ConcurrentSendReceive()
    {
        const int Threads = 8, PerThread = 50;
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
        using (HnapiClient client = HnapiClient.Open(s_clientToml))
        {
            var ids = new string[20];
            var tickets = new ulong[20];
            for (int i = 0; i < 20; i++)
            {
                ids[i] = NextId();
                tickets[i] = client.Send(Message("HNSIM-ECHO", ids[i], "NTE|" + i + "\r"), TimeSpan.FromSeconds(30));
            }
            Equal(20, tickets.Distinct().Count(), "distinct tickets");
            for (int i = 19; i >= 0; i--)
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

    static void ServerApplication()
    {
        const string Marker = "CSHARP-SERVER";
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
        Check(handled == 12, "the server handled " + handled + " requests");
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
