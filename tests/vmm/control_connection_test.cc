// A control connection's byte stream without sockets or a VM: what is
// executed, what is replied, and when the connection ends. The server's
// end-to-end behaviour is in control_test.cc (label kvm).
#include "vmm/control_connection.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace vmm {
namespace {

using std::chrono::milliseconds;
using TimePoint = ControlConnection::TimePoint;

class ControlConnectionTest : public ::testing::Test {
 protected:
  // Answers "ok N" for the Nth line; "stop!" is a forced stop.
  ControlRequestHandler handler() {
    return [this](std::string_view line, bool only_forced_stop, bool* forced_stop) {
      executed.emplace_back(line);
      *forced_stop = line == "stop!";
      if (only_forced_stop && !*forced_stop) return std::string();
      return "{\"ok\":true,\"n\":" + std::to_string(executed.size()) + "}";
    };
  }
  ControlConnection make(bool overflow = false) {
    return ControlConnection(t0, milliseconds(3000), overflow, [this](const char* note) { notes.emplace_back(note); });
  }
  const TimePoint t0 = TimePoint{} + std::chrono::hours(1);
  std::vector<std::string> executed;
  std::vector<std::string> notes;
};

TEST_F(ControlConnectionTest, LinesSplitAcrossReadsRunInOrderAndAPartialOneWaits) {
  ControlConnection c = make();
  c.receive("a\nb", t0, handler());
  c.receive("c\r\nd", t0, handler());
  EXPECT_EQ(executed, (std::vector<std::string>{"a", "bc\r"}));
  EXPECT_EQ(c.output(), "{\"ok\":true,\"n\":1}\n{\"ok\":true,\"n\":2}\n");
  c.consume(5);
  EXPECT_EQ(c.output(), ":true,\"n\":1}\n{\"ok\":true,\"n\":2}\n");
  EXPECT_TRUE(c.reading());
}

TEST_F(ControlConnectionTest, APartialLineAtEndOfInputIsReportedNotExecuted) {
  ControlConnection c = make();
  c.receive("{\"cmd\":\"stop\"", t0, handler());
  c.end_of_input(t0);
  EXPECT_TRUE(executed.empty());
  EXPECT_NE(c.output().find("request ended without a newline; not executed"), std::string::npos);
  EXPECT_TRUE(c.closing());
  c.receive("\n", t0, handler());
  EXPECT_TRUE(executed.empty()) << "nothing is read once closing";
  c.settle(t0, false);
  EXPECT_FALSE(c.dropped()) << "its reply is still unsent";
  c.consume(c.output().size());
  c.settle(t0, false);
  EXPECT_TRUE(c.dropped());
}

TEST_F(ControlConnectionTest, ALineOverTheLimitClosesTheConnectionUnexecuted) {
  ControlConnection c = make();
  c.receive("ok\n" + std::string(kControlMaxLine - 1, 'x'), t0, handler());
  EXPECT_EQ(executed.size(), 1u);
  EXPECT_TRUE(c.reading()) << "4095 bytes without a newline may still become a line";
  c.receive("x", t0, handler());
  EXPECT_EQ(executed.size(), 1u);
  EXPECT_NE(c.output().find("request line longer than 4096 bytes"), std::string::npos);
  EXPECT_TRUE(c.closing());
  EXPECT_EQ(notes, std::vector<std::string>{"request line too long"});

  ControlConnection at_limit = make();
  at_limit.receive(std::string(kControlMaxLine - 1, 'y') + "\n", t0, handler());
  EXPECT_EQ(executed.size(), 2u) << "4095 bytes and the newline make a line";
}

TEST_F(ControlConnectionTest, UnreadRepliesPastTheBoundDropTheClient) {
  ControlConnection c = make();
  std::string many;
  for (int i = 0; i < 4000; ++i) many += "s\n";
  c.receive(many, t0, handler());
  EXPECT_TRUE(c.dropped());
  EXPECT_LT(executed.size(), 4000u) << "it stops executing as soon as it is dropped";
  EXPECT_GT(c.output().size(), kControlMaxPendingOutput);
  EXPECT_EQ(notes, std::vector<std::string>{"dropped a client whose replies backed up"});
}

TEST_F(ControlConnectionTest, AnIdleClientIsToldAndClosedAfterTheTimeout) {
  ControlConnection c = make();
  c.receive("a\n", t0 + milliseconds(1000), handler());
  c.consume(c.output().size());
  EXPECT_EQ(c.deadline(), t0 + milliseconds(4000)) << "the timeout counts from the last bytes heard";
  c.check_deadline(t0 + milliseconds(3999));
  EXPECT_TRUE(c.reading());
  c.check_deadline(t0 + milliseconds(4000));
  EXPECT_NE(c.output().find(R"("error":"closed after 3000 ms without a request")"), std::string::npos) << c.output();
  EXPECT_TRUE(c.closing());
  c.settle(t0 + milliseconds(4999), false);
  EXPECT_FALSE(c.dropped()) << "a second to read why";
  c.settle(t0 + milliseconds(5000), false);
  EXPECT_TRUE(c.dropped()) << "a peer that never reads does not keep the slot";
}

TEST_F(ControlConnectionTest, AnOverflowClientGetsOneForcedStopAndNothingElse) {
  ControlConnection stopper = make(/*overflow=*/true);
  stopper.receive("stop!\nstatus\n", t0, handler());
  EXPECT_EQ(executed, std::vector<std::string>{"stop!"}) << "one request, not the one after it";
  EXPECT_EQ(stopper.output(), "{\"ok\":true,\"n\":1}\n");
  EXPECT_TRUE(stopper.closing());

  ControlConnection asker = make(/*overflow=*/true);
  asker.receive("status\n", t0, handler());
  EXPECT_NE(asker.output().find("too many control clients (at most 16)"), std::string::npos) << asker.output();
  EXPECT_TRUE(asker.closing());

  ControlConnection silent = make(/*overflow=*/true);
  EXPECT_EQ(silent.deadline(), t0 + kControlOverflowGrace);
  silent.check_deadline(t0 + kControlOverflowGrace);
  EXPECT_NE(silent.output().find("too many control clients"), std::string::npos);
  EXPECT_EQ(notes.back(), "refused a client: too many");
}

TEST_F(ControlConnectionTest, AHangUpEndsAClosingConnectionAtOnce) {
  ControlConnection c = make();
  c.end_of_input(t0);
  c.settle(t0, false);
  EXPECT_TRUE(c.dropped()) << "nothing to send: gone at once";

  ControlConnection pending = make();
  pending.receive("a\nb", t0, handler());
  pending.end_of_input(t0);
  pending.settle(t0, /*peer_hung_up=*/true);
  EXPECT_TRUE(pending.dropped());

  ControlConnection reading = make();
  reading.settle(t0, /*peer_hung_up=*/true);
  EXPECT_FALSE(reading.dropped()) << "a reading connection learns of the hang-up by reading (end of input)";
}

}  // namespace
}  // namespace vmm
