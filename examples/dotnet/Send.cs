// Send.cs — send one HL7 message file through hnsecure and print the answer.
//
//   mcs -out:Send.exe examples/dotnet/Send.cs bindings/dotnet/Hnapi.cs
//   LD_LIBRARY_PATH=target/release mono Send.exe client.toml request.hl7
//
// The answer is printed with each segment on its own line. Exit status 0 when an HL7
// answer came back (the receiver's, or a network ACK from HNAPI), 1 otherwise, 2 for a
// wrong command line.
using System;
using System.IO;

using Hnapi;

public static class Send
{
    public static int Main(string[] args)
    {
        if (args.Length != 2)
        {
            Console.Error.WriteLine("usage: Send.exe CLIENT_TOML MESSAGE_FILE");
            return 2;
        }
        byte[] message;
        try
        {
            message = File.ReadAllBytes(args[1]);
        }
        catch (Exception e) when (e is IOException || e is UnauthorizedAccessException)
        {
            Console.Error.WriteLine(args[1] + ": " + e.Message);
            return 1;
        }

        try
        {
            using (HnapiClient client = HnapiClient.Open(args[0]))
            {
                // The binding grows its buffer as the answer needs: no size to choose here.
                byte[] answer = client.SendReceive(message);
                for (int i = 0; i < answer.Length; i++)
                {
                    if (answer[i] == (byte)'\r')
                    {
                        answer[i] = (byte)'\n';
                    }
                }
                using (Stream stdout = Console.OpenStandardOutput())
                {
                    stdout.Write(answer, 0, answer.Length);
                }
                return 0;
            }
        }
        catch (HnapiException e)
        {
            Console.Error.WriteLine("send: " + e.Message);
            return 1;
        }
    }
}
